"""Thread limits for per-sample learning: torch's intra-op pool and NumPy's BLAS.

A streaming learner works on a few dozen numbers at a time; spreading that over threads costs
far more in synchronisation than it saves. Measured on this project's 2-core machine: a torch
forward pass on 667x8 took 14.8 ms with 2 threads and 0.19 ms with 1; NumPy's OpenBLAS spread a
(32 x 70) @ (70 x 240) product over both cores and took 204 us against 20 us on one when the
machine was busy; ``DASClassifier()`` ran prequential learning at 35.9 us a sample with BLAS on
one thread against 39.8 us with two on a quiet machine. The ``streamdas`` command, the Kafka
service, the simulations and the benchmarks all run inside :func:`limit_threads`.

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
