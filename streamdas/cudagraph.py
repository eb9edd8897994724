"""Replay a whole training step as one CUDA graph between two resizes.

A DAS network keeps its shapes between sizing cycles, so the sync-free training step of
:class:`~streamdas.DASTrainer` (forward, loss, penalty gradient, backward, finiteness check,
optimizer update, running averages, counters) can be captured once and replayed on *static*
input buffers: the CPU then launches one graph instead of some hundred kernels. A resize
replaces parameter storage (and the batch shape may change), so the graph is recaptured on the
first step after anything it baked in changes: the network's ``structure_version``, batch
shapes and dtypes, fine-tune mode, the regularizer, the optimizer object or its
hyperparameters. Call :meth:`StepGraph.reset` after replacing tensors by other means (e.g.
``optimizer.load_state_dict``).

Capture follows ``torch.cuda.graphs``' recipe for whole-network capture: warm-up iterations on a
side stream (they create the optimizer's lazy state and the regularizer's cached coefficients
eagerly: inside a capture such allocations would be replayed as fills), gradients set to
``None`` at the start of the step so that backward allocates them from the graph's private
pool (and each replay overwrites them), and the
optimizer's ``capturable`` flag set for the capture only (fused Adam ignores it; left on, it
would also switch off the CPU NumPy update for a model moved back to the CPU). Warm-up iterations run with the
non-finite flag forced on, so they change no parameter, optimizer state, average or counter
(fused Adam skips the update and undoes its step count, exactly as for a non-finite batch).

The torch API is reached through :class:`GraphAPI` so that the bookkeeping can be unit-tested
without a GPU (the suite's CPU tests pass a mock; the GPU tests use the real one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["GraphAPI", "StepGraph"]

#: body(x, y, warmup) runs one sync-free step on the device tensors x, y.
Body = Callable[[Tensor, Tensor, bool], Any]


@dataclass
class GraphAPI:
    """The pieces of ``torch.cuda`` that capture uses (swapped for a mock in CPU unit tests)."""

    new_graph: Callable[[], Any] = torch.cuda.CUDAGraph
    #: ``capture(graph, pool=handle)``: the capture context (``torch.cuda.graph``)
    capture: Callable[..., AbstractContextManager[Any]] = torch.cuda.graph
    new_stream: Callable[[], Any] = torch.cuda.Stream
    use_stream: Callable[[Any], AbstractContextManager[Any]] = torch.cuda.stream
    current_stream: Callable[[], Any] = torch.cuda.current_stream
    new_pool: Callable[[], Any] = torch.cuda.graph_pool_handle


class StepGraph:
    """A captured training step, recaptured whenever its key changes.

    Parameters
    ----------
    body
        ``body(x, y, warmup)``: the step on device tensors; with ``warmup`` it must change
        nothing (the trainer forces its non-finite flag on).
    prepare
        Called just before the capture (e.g. to set the optimizer's ``capturable`` flag, which
        torch requires while capturing); returns a callable that undoes it afterwards.
    warmup
        Warm-up iterations before each capture (torch's docs use 3; 11 for DDP).
    api
        The CUDA graph API (see :class:`GraphAPI`).

    Examples
    --------
    The bookkeeping, with a mock API (no GPU needed):

    >>> from contextlib import nullcontext
    >>> class Stream:
    ...     def wait_stream(self, other): pass
    >>> class Graph:
    ...     replays = 0
    ...     def replay(self): Graph.replays += 1
    >>> api = GraphAPI(new_graph=Graph, capture=lambda g, pool: nullcontext(), new_stream=Stream,
    ...                use_stream=lambda s: nullcontext(), current_stream=Stream, new_pool=object)
    >>> sg = StepGraph(lambda x, y, warmup: None, lambda: (lambda: None), api=api)
    >>> x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    >>> for key in ["v0", "v0", "v0", "v1"]:  # e.g. the network's structure version
    ...     sg.step(x, y, key)
    >>> sg.n_captures, Graph.replays
    (2, 4)
    """

    def __init__(
        self,
        body: Body,
        prepare: Callable[[], Callable[[], None]],
        warmup: int = 3,
        api: GraphAPI | None = None,
    ) -> None:
        self.body = body
        self.prepare = prepare
        self.warmup = warmup
        self.api = api or GraphAPI()
        self._graph: Any = None
        self._pool: Any = None  # one memory pool for all captures (one graph lives at a time)
        self._key: Hashable = None
        self.static_x: Tensor | None = None
        self.static_y: Tensor | None = None
        #: graphs captured so far, and host seconds spent warming up and capturing them
        self.n_captures = 0
        self.capture_seconds = 0.0

    def reset(self) -> None:
        """Drop the graph: the next step recaptures."""
        self._graph, self._key = None, None

    @property
    def captured(self) -> bool:
        return self._graph is not None

    def stale(self, key: Hashable) -> bool:
        """Whether a step with ``key`` would (re)capture."""
        return self._graph is None or key != self._key

    def _capture(self, x: Tensor, y: Tensor, key: Hashable) -> None:
        t0 = time.perf_counter()
        self._graph = None  # free the old graph's pool before capturing a new one
        api = self.api
        same = (
            self.static_x is not None
            and self.static_y is not None
            and self.static_x.shape == x.shape
            and self.static_x.dtype == x.dtype
            and self.static_x.device == x.device
            and self.static_y.shape == y.shape
            and self.static_y.dtype == y.dtype
        )
        if not same:
            self.static_x, self.static_y = torch.empty_like(x), torch.empty_like(y)
        assert self.static_x is not None and self.static_y is not None
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        side = api.new_stream()
        side.wait_stream(api.current_stream())
        with api.use_stream(side):
            for _ in range(self.warmup):
                self.body(self.static_x, self.static_y, True)
        api.current_stream().wait_stream(side)
        graph = api.new_graph()
        if self._pool is None:
            self._pool = api.new_pool()
        undo = self.prepare()
        try:
            with api.capture(graph, pool=self._pool):
                self.body(self.static_x, self.static_y, False)
        finally:
            undo()
        self._graph, self._key = graph, key
        self.n_captures += 1
        self.capture_seconds += time.perf_counter() - t0

    def step(self, x: Tensor, y: Tensor, key: Hashable) -> None:
        """One step on ``(x, y)``: recapture if ``key`` (or the batch's shape) changed, then
        copy the batch into the static buffers and replay."""
        if self._graph is None or key != self._key:
            self._capture(x, y, key)
        else:
            assert self.static_x is not None and self.static_y is not None
            self.static_x.copy_(x, non_blocking=True)
            self.static_y.copy_(y, non_blocking=True)
        self._graph.replay()
