"""Thread limits for per-sample learning: torch's intra-op pool and NumPy's BLAS.

A streaming learner works on a few dozen numbers at a time; spreading that over threads costs
far more in synchronisation than it saves (docs/benchmarks.md, "Method"). The ``streamdas``
command, the Kafka service, the simulations and the benchmarks all run inside
:func:`limit_threads`.

Library users choose for their own process, e.g. ``with limit_threads(1): ...`` around a River
evaluation, or ``OPENBLAS_NUM_THREADS=1`` in the environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from threadpoolctl import threadpool_limits

__all__ = ["limit_threads"]


@contextmanager
def limit_threads(n: int = 1) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads and ``n`` BLAS threads, then restore.

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with limit_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)
