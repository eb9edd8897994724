"""Grow and prune: the two structural operations of Dynamic Auto-Sizing (Algorithm 1).

* **Prune** removes, from every hidden layer, the units whose incoming weights and bias are all
  below ``tau`` in absolute value, together with their outgoing columns.
* **Grow** appends ``max(ceil(n * growth_percentage), min_growth)`` units to every hidden layer,
  with weights drawn from the layer's initialiser and multiplied by ``tau`` (bias 0), so that the
  network's outputs barely move (``grow_init="tau"``, the paper's). ``grow_init="silent"``
  instead gives new units full-size incoming weights and zero outgoing weights: the outputs do
  not move at all, and the units are useful features from their first step.

Both keep an optimizer's state, and the sizer's own :class:`RunningAverages`, aligned with the
surviving units (see :func:`streamdas.model.edit_parameter`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamdas.averaging import Views, lerp, numpy_views
from streamdas.model import Aligned, DASNet, Follower, NetConfig, StateHolder

__all__ = [
    "NetConfig",
    "RunningAverages",
    "SizingConfig",
    "grow",
    "growth_amount",
    "prunable_units",
    "prune",
    "update_averages",
    "update_averages_masked",
]


#: How grown units are initialised (see :attr:`SizingConfig.grow_init`).
GROW_INITS = ("tau", "silent")

#: The :class:`SizingConfig` fields an estimator takes under the same name (``every`` is its
#: ``grow_every``), in the estimators' parameter order.
SHARED_FIELDS = (
    "tau",
    "growth_percentage",
    "min_growth",
    "min_units",
    "max_units",
    "grow",
    "prune",
    "prune_horizon",
    "grow_init",
)


@dataclass(frozen=True)
class SizingConfig:
    """When and how a network changes size.

    Parameters
    ----------
    tau
        Pruning threshold, and the scale of newly grown weights (paper: 1e-3).
    growth_percentage
        Fraction of a layer's width added at each growth (paper: 0.2).
    min_growth
        Minimum number of units added at each growth (paper: 20).
    min_units
        A layer never shrinks below this (at least 1).
    max_units
        A layer never grows above this (``None``: no limit).
    every
        Streaming mode: samples between two sizing cycles (prune, then grow). This is the
        paper's "epoch".
    grow
        Whether growth is on (off: the paper's "DAS without growth").
    prune
        Whether pruning is on.
    prune_horizon
        The pruning test reads each incoming parameter's exponential moving average over
        roughly the last ``prune_horizon`` samples (decay ``exp(-batch / prune_horizon)`` per
        step) instead of its value at that instant. With Adam, a weight held at zero by L1
        keeps oscillating around it with an amplitude of about the learning rate, so the
        instantaneous test "all incoming |w| < tau" rarely passes for a unit with many inputs
        and the last hidden layer swells. 0 gives the paper's instantaneous test exactly.
        Units whose current parameters exceed ``10 * tau`` are never pruned.
    grow_init
        How grown units start. ``"tau"`` (the paper's): incoming and outgoing weights from the
        initialiser times ``tau``, so a new unit's activation and its effect on the outputs
        start tiny and it takes many steps to matter. ``"silent"``: incoming weights at the
        initialiser's full scale and zero outgoing weights, so the outputs are exactly
        unchanged and the unit's (informative, random-feature) activation starts learning its
        outgoing weights on the first step.

    >>> growth_amount(100, SizingConfig())
    20
    >>> growth_amount(300, SizingConfig())
    60
    """

    tau: float = 1e-3
    growth_percentage: float = 0.2
    min_growth: int = 20
    min_units: int = 1
    max_units: int | None = None
    every: int = 1000
    grow: bool = True
    prune: bool = True
    prune_horizon: int = 800
    grow_init: str = "tau"

    def __post_init__(self) -> None:
        if self.grow_init not in GROW_INITS:
            raise ValueError(f"grow_init must be one of {GROW_INITS}, not {self.grow_init!r}")
        if self.tau < 0:
            raise ValueError("tau must be >= 0")
        if self.growth_percentage < 0 or self.min_growth < 0:
            raise ValueError("growth_percentage and min_growth must be >= 0")
        if self.min_units < 1:
            raise ValueError("min_units must be >= 1 (a layer can never be empty)")
        if self.max_units is not None and self.max_units < self.min_units:
            raise ValueError("max_units must be >= min_units")
        if self.every < 1:
            raise ValueError("every must be >= 1 sample")
        if self.prune_horizon < 0:
            raise ValueError("prune_horizon must be >= 0 samples")


def growth_amount(n: int, config: SizingConfig) -> int:
    """Units to add to a layer of width ``n``: ``max(ceil(n * pct), min_growth)``, capped by max_units."""
    amount = max(math.ceil(n * config.growth_percentage), config.min_growth)
    if config.max_units is not None:
        amount = min(amount, max(config.max_units - n, 0))
    return int(amount)


#: Key of a parameter's running average in :attr:`RunningAverages.state` (the key checkpoints
#: written before the averages left the optimizer's state used there too).
AVERAGE_KEY = "das_average"


class RunningAverages:
    """The sizer's state: running averages of the hidden layers' incoming parameters, read by
    the pruning test (see :attr:`SizingConfig.prune_horizon`).

    ``state[param]`` is ``{AVERAGE_KEY: tensor}``, the layout of an optimizer's state, so
    :func:`~streamdas.model.edit_parameter` keeps it aligned when units are pruned or grown
    (pass it, alongside the optimizer, to :func:`prune` and :func:`grow`).

    >>> net = DASNet(NetConfig(n_inputs=2, hidden_sizes=(3,), n_outputs=1))
    >>> avg = RunningAverages()
    >>> update_averages(net, avg, decay=0.5)
    >>> avg.ready(net), avg.get(net.hidden[0].bias).shape
    (True, torch.Size([3]))
    >>> grow(net, SizingConfig(min_growth=2), optimizer=None, averages=avg)
    [2]
    >>> avg.get(net.hidden[0].bias).shape
    torch.Size([5])
    """

    def __init__(self) -> None:
        self.state: dict[torch.nn.Parameter, dict[str, torch.Tensor]] = {}
        #: (network version, :func:`~streamdas.averaging.numpy_views`) between resizes
        self._cached: tuple[int, Views] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The cached views share memory with *these* tensors: a copy rebuilds its own.
        return {**self.__dict__, "_cached": None}

    def follower(self) -> Follower:
        """How resizes treat these averages: the averages of new units (rows and next-layer
        columns), inputs and outputs start at the parameters' new values."""
        return Follower(self, units="values", inputs="values", outputs="values")

    def get(self, param: torch.nn.Parameter) -> torch.Tensor | None:
        """The running average of ``param``, or None if it has none yet."""
        entry = self.state.get(param)
        return None if entry is None else entry.get(AVERAGE_KEY)

    def ready(self, net: DASNet) -> bool:
        """Whether every hidden parameter of ``net`` has its average."""
        return all(self.get(p) is not None for layer in net.hidden for p in (layer.weight, layer.bias))

    def clear(self) -> None:
        self.state.clear()
        self._cached = None

    def numpy_views(self, net: DASNet) -> Views | None:
        """:func:`~streamdas.averaging.numpy_views` of the hidden layers' parameters, the
        averages created where missing; rebuilt only when ``net`` is resized."""
        version = net.structure_version
        if self._cached is not None and self._cached[0] == version:
            return self._cached[1]
        params = [p for layer in net.hidden for p in (layer.weight, layer.bias)]
        views = numpy_views(params, _averages_of(self, params))
        self._cached = None if views is None else (version, views)
        return views


def _peak(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per unit: the largest absolute incoming parameter."""
    return torch.maximum(weight.abs().flatten(1).amax(1), bias.abs())


@torch.no_grad()
def prunable_units(net: DASNet, index: int, tau: float, averages: StateHolder | None = None) -> torch.Tensor:
    """Boolean mask of the units of hidden layer ``index`` whose incoming parameters are all < tau.

    If ``averages`` (a :class:`RunningAverages`) holds running averages of the parameters (see
    :attr:`SizingConfig.prune_horizon`), the test reads those, and units whose current
    parameters exceed ``10 * tau`` are kept.
    """
    layer = net.hidden[index]
    w_avg = b_avg = None
    if averages is not None:
        w_avg = averages.state.get(layer.weight, {}).get(AVERAGE_KEY)
        b_avg = averages.state.get(layer.bias, {}).get(AVERAGE_KEY)
    if layer.weight.device.type == "cpu":
        # NumPy, which the CPU learning path keeps warm (torch's small ops are slow once they
        # are not): the test runs every cycle.
        now_np = _peak_np(layer.weight, layer.bias)
        if w_avg is not None and b_avg is not None:
            return torch.from_numpy((_peak_np(w_avg, b_avg) < tau) & (now_np < 10 * tau))
        return torch.from_numpy(now_np < tau)
    now = _peak(layer.weight, layer.bias)
    if w_avg is not None and b_avg is not None:
        return (_peak(w_avg, b_avg) < tau) & (now < 10 * tau)
    return now < tau


def _peak_np(weight: torch.Tensor, bias: torch.Tensor) -> np.ndarray:
    w, b = weight.detach().numpy(), bias.detach().numpy()
    peak = np.abs(b)
    if w.size:
        np.maximum(np.abs(w.reshape(w.shape[0], -1)).max(1), peak, out=peak)
    return peak


def _averages_of(holder: StateHolder, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    """The averages of ``params``, created at their values where missing, or where a resize
    made without passing ``holder`` left one of another shape (it restarts)."""
    out = []
    for p in params:
        state = holder.state.get(p)
        if state is None:
            state = holder.state[p] = {}
        avg = state.get(AVERAGE_KEY)
        if avg is None or avg.shape != p.shape:
            avg = state[AVERAGE_KEY] = p.detach().clone()
        out.append(avg)
    return out


@torch.no_grad()
def update_averages(net: DASNet, averages: StateHolder, decay: float) -> None:
    """Fold the hidden layers' current parameters into their running averages (created at the
    parameters' values on first use) in ``averages`` (a :class:`RunningAverages`)."""
    views = averages.numpy_views(net) if isinstance(averages, RunningAverages) else None
    if views is not None:  # NumPy on shared storage, views cached between resizes
        lerp(views, None, 1.0 - decay)
        return
    params = [p for layer in net.hidden for p in (layer.weight, layer.bias)]
    lerp(_averages_of(averages, params), params, 1.0 - decay)


@torch.no_grad()
def update_averages_masked(net: DASNet, averages: StateHolder, decay: float, skip: torch.Tensor) -> None:
    """:func:`update_averages` without a host round trip: ``skip`` (a 0-d float tensor on the
    parameters' device, 1 for a skipped batch) turns the update into a no-op on the device.

    The same float32 arithmetic as :func:`update_averages`: ``avg += (p - avg) * (1 - decay)``.
    """
    params = [p for layer in net.hidden for p in (layer.weight, layer.bias)]
    lerp(_averages_of(averages, params), params, 1.0 - decay, skip)


@torch.no_grad()
def prune(
    net: DASNet,
    config: SizingConfig,
    optimizer: Aligned = None,
    averages: RunningAverages | None = None,
) -> list[int]:
    """Remove prunable units from every hidden layer; return how many went from each.

    The test reads ``averages`` where they exist (see :func:`prunable_units`); the optimizer's
    state and the averages are kept aligned with the surviving units.

    Where pruning would leave fewer than ``min_units``, the prunable units with the largest
    incoming parameters are kept.

    >>> net = DASNet(NetConfig(n_inputs=2, hidden_sizes=(4,), n_outputs=1))
    >>> with torch.no_grad():
    ...     _ = net.hidden[0].weight[1:].zero_(), net.hidden[0].bias.zero_()
    >>> prune(net, SizingConfig(min_units=2)), net.hidden_sizes
    ([2], [2])
    """
    removed: list[int] = []
    for i, layer in enumerate(net.hidden):
        mask = prunable_units(net, i, config.tau, averages).cpu().numpy()  # NumPy: few tiny ops
        n = mask.size
        n_drop = int(mask.sum())
        floor = max(config.min_units, 1)
        if n - n_drop < floor:
            # Rescue the strongest prunable units until the floor is met.
            peak = (
                _peak_np(layer.weight, layer.bias)
                if layer.weight.device.type == "cpu"
                else _peak(layer.weight, layer.bias).cpu().numpy()
            )
            candidates = np.flatnonzero(mask)
            order = np.argsort(-peak[candidates], kind="stable")
            mask[candidates[order[: floor - (n - n_drop)]]] = False
            n_drop = int(mask.sum())
        if n_drop:
            net.remove_units(i, np.flatnonzero(~mask), optimizer=(optimizer, averages))
        removed.append(n_drop)
    return removed


@torch.no_grad()
def grow(
    net: DASNet,
    config: SizingConfig,
    generator: torch.Generator | None = None,
    optimizer: Aligned = None,
    averages: RunningAverages | None = None,
) -> list[int]:
    """Append new units to every hidden layer (see :attr:`SizingConfig.grow_init`); return how
    many each got.

    The optimizer's state of new units starts at zero; their running averages (in
    ``averages``) start at their initial values (:meth:`RunningAverages.follower`).

    >>> net = DASNet(NetConfig(n_inputs=2, hidden_sizes=(10, 100), n_outputs=1))
    >>> grow(net, SizingConfig()), net.hidden_sizes
    ([20, 20], [30, 120])
    """
    added: list[int] = []
    for i in range(len(net.hidden)):
        n_new = growth_amount(net.hidden_sizes[i], config)
        if config.grow_init == "silent":
            net.add_units(
                i, n_new, scale=1.0, out_scale=0.0, generator=generator, optimizer=(optimizer, averages)
            )
        else:
            net.add_units(i, n_new, scale=config.tau, generator=generator, optimizer=(optimizer, averages))
        added.append(n_new)
    return added
