"""Step engines: one guarded optimizer step on a minibatch, computed three ways.

Every engine keeps one contract. It computes the minibatch's mean data loss and the
gradients, adds the regularizer's gradient (unless fine-tuning), and drops the batch when the
loss or a gradient is not finite (nothing changes; the batch is counted as skipped). Otherwise
it steps the optimizer and makes the updates that follow every step (:func:`after_step`). The
counts and the loss go to the trainer's :class:`~streamdas.counters.StepCounters`; ``step``
returns nothing.

* :class:`NumpyEngine`: CPU MLPs, loss and gradients in NumPy (:mod:`streamdas.backprop`) and
  Adam's update in NumPy (:mod:`streamdas.adam`); the same numbers as autograd, to float32
  rounding.
* :class:`AutogradEngine`: any network, reading the loss and a finiteness flag on the host.
* :class:`DeviceEngine`: the autograd step without a host round trip (the non-finite flag stays
  on the device and the optimizer skips on it), replayed as a CUDA graph between resizes where
  enabled (:mod:`streamdas.cudagraph`).

:class:`EngineChoice` picks the engine once per device, structure version and settings; the
NumPy engine still declines a batch it would not compute as torch does (e.g. class
probabilities as targets), which then goes to the other engine.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from streamdas.adam import NumpyAdam
from streamdas.averaging import ParameterAverages
from streamdas.backprop import NumpyBackprop
from streamdas.counters import StepCounters
from streamdas.cudagraph import StepGraph
from streamdas.model import DASNet
from streamdas.regularizers import Regularizer
from streamdas.sizing import RunningAverages, SizingConfig, update_averages, update_averages_masked
from streamdas.train_config import TrainConfig

__all__ = [
    "AutogradEngine",
    "DeviceEngine",
    "EngineChoice",
    "NumpyEngine",
    "StepEngine",
    "StepHost",
    "after_step",
    "tracks_pruning_averages",
]


class StepHost(Protocol):
    """What the engines read from their trainer (a :class:`~streamdas.DASTrainer`); read at
    every step, so the trainer may change its settings between steps."""

    @property
    def net(self) -> DASNet: ...
    @property
    def optimizer(self) -> torch.optim.Optimizer: ...
    @property
    def regularizer(self) -> Regularizer: ...
    @property
    def loss_fn(self) -> nn.Module: ...
    @property
    def sizing(self) -> SizingConfig: ...
    @property
    def train_config(self) -> TrainConfig: ...
    @property
    def fine_tune(self) -> bool: ...
    @property
    def pruning_averages(self) -> RunningAverages: ...
    @property
    def prediction_averages(self) -> ParameterAverages | None: ...
    @property
    def counters(self) -> StepCounters: ...


def tracks_pruning_averages(host: StepHost) -> bool:
    """Whether steps keep the pruning test's running averages: pruning on, with a horizon,
    and not fine-tuning."""
    return host.sizing.prune and host.sizing.prune_horizon > 0 and not host.fine_tune


def after_step(host: StepHost, n: int, skip: Tensor | None = None) -> None:
    """The updates that follow an optimizer step on ``n`` samples: the pruning averages and
    the prediction averages. ``skip`` (a 0-d float tensor on the device, 1 for a skipped
    batch) makes them no-ops without a host round trip."""
    if tracks_pruning_averages(host):
        decay = math.exp(-n / host.sizing.prune_horizon)
        if skip is None:
            update_averages(host.net, host.pruning_averages, decay)
        else:
            update_averages_masked(host.net, host.pruning_averages, decay, skip)
    if host.prediction_averages is not None:
        host.prediction_averages.update(host.net, n, seen=host.counters.samples + n, skip=skip)


class StepEngine(ABC):
    """One guarded optimizer step on a minibatch (see the module's contract)."""

    def __init__(self, host: StepHost) -> None:
        self.host = host
        # Resizing keeps the Parameter objects (only their storage changes), so this list and
        # the optimizer's references stay valid for the trainer's lifetime.
        self.params = list(host.net.parameters())

    @abstractmethod
    def step(self, x: Tensor, y: Tensor, n: int | None = None) -> None:
        """Learn from the minibatch ``(x, y)`` (tensors on the trainer's device), counted as
        ``n`` samples (default: its rows; fewer where some rows are rehearsed ones): the
        counters and the averages' horizons, all in samples, advance by ``n``."""


class _Synchronising(StepEngine):
    """An engine that reads the loss and the finiteness of the gradients on the host: the
    sequence of the contract, written once; subclasses compute its pieces."""

    def step(self, x: Tensor, y: Tensor, n: int | None = None) -> None:
        counters = self.host.counters
        loss = self._loss_and_grads(x, y)
        counters.record_loss(loss)
        if not math.isfinite(loss):
            counters.skip()  # the batch is dropped; nothing was changed
            return
        if not self.host.fine_tune:
            self._add_penalty_grad()
        if not self._grads_finite():
            self._discard_grads()
            counters.skip()
            return
        self._apply()
        n = int(x.shape[0]) if n is None else n
        after_step(self.host, n)
        counters.taken(n)

    @abstractmethod
    def _loss_and_grads(self, x: Tensor, y: Tensor) -> float:
        """The mean data loss; the gradients too where it is finite."""

    @abstractmethod
    def _add_penalty_grad(self) -> None: ...

    @abstractmethod
    def _grads_finite(self) -> bool: ...

    def _discard_grads(self) -> None:
        """Forget the gradients of a dropped batch."""

    @abstractmethod
    def _apply(self) -> None:
        """The optimizer's update."""


class NumpyEngine(_Synchronising):
    """The CPU fast path: NumPy loss and gradients, regularizer and Adam update (torch's
    optimizer steps instead where :class:`~streamdas.adam.NumpyAdam` does not cover it)."""

    def __init__(self, host: StepHost) -> None:
        super().__init__(host)
        self.backprop = NumpyBackprop(host.net, host.train_config.loss)
        self.adam = NumpyAdam(host.optimizer)
        assert all(a is b for a, b in zip(self.backprop.parameters(), self.params, strict=True))
        self._grads: list[Any] = []

    @property
    def supported(self) -> bool:
        """Whether the network is one NumPy computes (see :class:`NumpyBackprop`)."""
        return self.backprop.supported

    def accepts(self, x: Tensor, y: Tensor) -> bool:
        """Whether this batch is one NumPy computes as torch would."""
        return (
            x.dtype == torch.float32
            and x.device.type == "cpu"
            and self.backprop.accepts(x.shape, y.shape, y.dtype)
        )

    def _loss_and_grads(self, x: Tensor, y: Tensor) -> float:
        loss, self._grads = self.backprop(x.numpy(), y.numpy())
        return loss

    def _add_penalty_grad(self) -> None:
        regularizer = self.host.regularizer
        if regularizer.alpha:
            regularizer.add_grad_arrays(*self.backprop.hidden_pairs(self._grads))

    def _grads_finite(self) -> bool:
        return self.backprop.grads_finite()

    def _apply(self) -> None:
        optimizer = self.host.optimizer
        if self.adam.optimizer is not optimizer:  # replaced by the user
            self.adam = NumpyAdam(optimizer)
        if not self.adam.step(self.params, self._grads):
            for p, g in zip(self.params, self.backprop.grad_tensors, strict=True):
                if p.grad is not g:
                    p.grad = g
            optimizer.step()


def nonfinite_flag(tensors: list[Tensor], found: Tensor, unit_scale: Tensor) -> Tensor:
    """Set the 0-d ``found`` to 1 if any of ``tensors`` holds an inf or NaN, in one fused
    kernel and without a host read (scale 1: the tensors are unchanged)."""
    found.zero_()
    torch._amp_foreach_non_finite_check_and_unscale_(tensors, found, unit_scale)
    return found


class AutogradEngine(_Synchronising):
    """Autograd loss and gradients, the regularizer's gradient, a fused finiteness check, and
    the optimizer's step."""

    def __init__(self, host: StepHost, device: torch.device) -> None:
        super().__init__(host)
        self.found_inf = torch.zeros((), device=device)
        self.unit_scale = torch.ones((), device=device)

    def _loss_and_grads(self, x: Tensor, y: Tensor) -> float:
        host = self.host
        if not host.net.training:
            host.net.train()
        host.optimizer.zero_grad(set_to_none=True)
        loss = host.loss_fn(host.net(x), y)
        value = float(loss.detach())
        if math.isfinite(value):
            loss.backward()
        return value

    def _add_penalty_grad(self) -> None:
        self.host.regularizer.add_grad(list(self.host.net.hidden))

    def _grads_finite(self) -> bool:
        grads = [p.grad for p in self.params if p.grad is not None]
        return not bool(nonfinite_flag(grads, self.found_inf, self.unit_scale))

    def _discard_grads(self) -> None:
        self.host.optimizer.zero_grad(set_to_none=True)

    def _apply(self) -> None:
        self.host.optimizer.step()


class DeviceEngine(StepEngine):
    """The sync-free step: nothing reads a tensor into Python. A non-finite batch is skipped
    on the device (the optimizer is told through ``found_inf``, as ``torch.amp.GradScaler``
    does) and counted there; the steps count as taken until the counters settle. On CUDA the
    step is replayed as a captured graph where :attr:`~streamdas.TrainConfig.cuda_graphs` is
    on, recaptured whenever something it bakes in changes (:meth:`graph_key`)."""

    def __init__(self, host: StepHost, device: torch.device) -> None:
        super().__init__(host)
        self.found_inf = torch.zeros((), device=device)
        self.unit_scale = torch.ones((), device=device)
        self.graph = StepGraph(self.body, self.capturable) if device.type == "cuda" else None
        self.n: int | None = None  # the samples the current step counts (None: its rows)

    def body(self, x: Tensor, y: Tensor, warmup: bool = False) -> Tensor:
        """The step on device tensors; returns the loss (0-d, on the device).

        With ``warmup`` the non-finite flag is forced on, so nothing changes (the optimizer's
        lazy state and cached coefficients are created, as CUDA graph capture needs).
        """
        host = self.host
        opt = host.optimizer
        opt.zero_grad(set_to_none=True)
        loss = host.loss_fn(host.net(x), y)
        loss.backward()
        if not host.fine_tune:
            host.regularizer.add_grad(list(host.net.hidden))
        last = host.counters.device_loss
        last.copy_(loss.detach())
        grads = [p.grad for p in self.params if p.grad is not None]
        found = nonfinite_flag([last, *grads], self.found_inf, self.unit_scale)
        if warmup:
            found.fill_(1.0)
        opt.found_inf = found  # type: ignore[attr-defined]  # read by fused Adam's step
        try:
            opt.step()
        finally:
            del opt.found_inf  # type: ignore[attr-defined]
        n = int(x.shape[0]) if self.n is None else self.n
        after_step(host, n, skip=found)
        if not warmup:
            skipped = found.to(torch.int64)
            host.counters.skipped[0].add_(skipped)
            host.counters.skipped[1].add_(skipped, alpha=n)
        return loss.detach()

    def capturable(self) -> Callable[[], None]:
        """Mark the optimizer capturable for a capture (torch checks it); returns the undo."""
        groups = self.host.optimizer.param_groups
        old = [g.get("capturable", False) for g in groups]
        for g in groups:
            g["capturable"] = True

        def undo() -> None:
            for g, flag in zip(groups, old, strict=True):
                g["capturable"] = flag

        return undo

    def graph_ready(self) -> bool:
        """Whether the lazily created state (optimizer moments, running averages) exists, so a
        capture finds it: the first steps run eagerly and create it exactly where the
        synchronising step does (warm-up would create the averages one step early)."""
        host = self.host
        state = host.optimizer.state
        if not all(state.get(p) for p in self.params):
            return False
        averages = host.prediction_averages
        if averages is not None and not averages.warm(host.counters.samples):
            return False  # the averages' time constant still changes every step
        if tracks_pruning_averages(host):
            return host.pruning_averages.ready(host.net)
        return True

    def graph_key(self, x: Tensor, y: Tensor) -> tuple[Any, ...]:
        """Everything a captured step bakes in (see :mod:`streamdas.cudagraph`)."""
        host = self.host
        groups = tuple(
            (g["lr"], g["betas"], g["eps"], g["weight_decay"]) for g in host.optimizer.param_groups
        )
        return (
            host.net.structure_version,
            tuple(x.shape),
            x.dtype,
            tuple(y.shape),
            y.dtype,
            host.fine_tune,
            id(host.optimizer),
            groups,
            id(host.regularizer),
            host.regularizer.alpha,
            host.sizing.prune,
            host.sizing.prune_horizon,
            host.train_config.average_horizon,
            self.n,
        )

    def step(self, x: Tensor, y: Tensor, n: int | None = None) -> None:
        host = self.host
        self.n = n  # read by body (and baked into a captured graph: part of its key)
        if not host.net.training:
            host.net.train()
        graph = self.graph
        key = self.graph_key(x, y) if graph is not None and host.train_config.cuda_graphs else None
        if graph is not None and key is not None and (not graph.stale(key) or self.graph_ready()):
            graph.step(x, y, key)
            loss = host.counters.device_loss  # static: overwritten by the next step
        else:
            loss = self.body(x, y)
        host.counters.taken_on_device(int(x.shape[0]) if n is None else n, loss)


def wants_sync_free(host: StepHost, device: torch.device) -> bool:
    """Whether steps that NumPy does not take run sync-free: as
    :attr:`~streamdas.TrainConfig.sync_free` says (``None``: on CUDA), where the optimizer
    accepts a device-side non-finite flag."""
    mode = host.train_config.sync_free
    if mode is None:
        mode = device.type == "cuda"
    return bool(mode) and getattr(host.optimizer, "_step_supports_amp_scaling", False)


class EngineChoice:
    """The trainer's engines, and which one steps a batch: decided again only when the
    network's structure version, the optimizer or the path settings change.

    Parameters
    ----------
    host
        The trainer.
    device
        The trainer's device.
    """

    def __init__(self, host: StepHost, device: torch.device) -> None:
        self.host = host
        self.device = device
        self.numpy = NumpyEngine(host)
        self.autograd = AutogradEngine(host, device)
        self.sync_free = DeviceEngine(host, device)
        self._key: tuple[Any, ...] | None = None
        self._numpy: NumpyEngine | None = None
        self._other: StepEngine = self.autograd

    def _decide(self) -> None:
        host = self.host
        train = host.train_config
        key = (host.net.structure_version, host.optimizer, train.numpy_backprop, train.sync_free)
        if key == self._key:
            return
        self._key = key
        self._numpy = self.numpy if train.numpy_backprop and self.numpy.supported else None
        self._other = self.sync_free if wants_sync_free(host, self.device) else self.autograd

    @property
    def graph_captures(self) -> int:
        """CUDA graphs captured so far (one per shape between resizes; 0 without graphs)."""
        graph = self.sync_free.graph
        return 0 if graph is None else graph.n_captures

    @property
    def graph_capture_seconds(self) -> float:
        """Host seconds spent warming up and capturing CUDA graphs."""
        graph = self.sync_free.graph
        return 0.0 if graph is None else graph.capture_seconds

    def for_batch(self, x: Tensor, y: Tensor) -> StepEngine:
        """The engine that steps the minibatch ``(x, y)``."""
        self._decide()
        if self._numpy is not None and self._numpy.accepts(x, y):
            return self._numpy
        return self._other
