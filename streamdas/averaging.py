"""Polyak averaging for prediction: running averages of every parameter of a resizing network.

A stream learner needs a high learning rate to follow drift, and a high learning rate leaves
the weights jittering around the current concept: each minibatch pushes them a little too far
its own way. Predicting with an exponential moving average of the weights over the last few
hundred samples (Polyak-Ruppert averaging) removes most of that jitter while the weights that
learn keep their speed. The average lags the live weights by about ``horizon`` samples, so the
horizon stays short next to the time scale of drift.

The averages ride along every resize the way an optimizer's state does (``state[param]`` is a
dict of tensors, so :func:`~streamdas.model.edit_parameter` keeps them aligned when units are
pruned or grown). The slices it appends for grown units and new inputs start at zero, so growth
adds nothing to the averaged outputs (grown units start near zero anyway: the paper scales
their weights by tau); new output units (classes) start at their values. The paper predicts
with the live weights; :attr:`~streamdas.TrainConfig.average_horizon` ``= 0`` does the same.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from streamdas import checkpoint
from streamdas.model import Follower

__all__ = ["POLYAK_KEY", "WARMUP_FRACTION", "ParameterAverages", "lerp", "numpy_views"]

#: (parameter, average, scratch) NumPy triples: views sharing the tensors' storage.
Views = list[tuple[np.ndarray, np.ndarray, np.ndarray]]

#: Key of a parameter's average in :attr:`ParameterAverages.state`.
POLYAK_KEY = "das_polyak"
#: The average spans at most this fraction of the samples seen, so that the random start leaves
#: it soon (see :meth:`ParameterAverages.span`; docs/benchmarks.md, "Accuracy suite").
WARMUP_FRACTION = 0.3


def numpy_views(params: list[nn.Parameter], averages: list[Tensor]) -> Views | None:
    """(parameter, average, scratch) NumPy views of CPU float32 ``params`` and their
    ``averages``; None where NumPy does not apply. Valid until a resize replaces a tensor."""
    if not all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params):
        return None
    return [
        (p.detach().numpy(), a.numpy(), np.empty(tuple(p.shape), np.float32))
        for p, a in zip(params, averages, strict=True)
    ]


@torch.no_grad()
def lerp(
    averages: list[Tensor] | Views,
    params: list[nn.Parameter] | None,
    weight: float,
    skip: Tensor | None = None,
) -> None:
    """``avg += (p - avg) * weight`` for every pair, in place (float32 arithmetic either way).

    ``averages`` is either :func:`numpy_views` (``params`` None: three NumPy calls a tensor, no
    torch dispatch) or tensors beside ``params``; ``skip`` (a 0-d float tensor on the device,
    1 for a skipped batch) then makes it a no-op without a host round trip.

    >>> a, p = [torch.zeros(2)], [torch.nn.Parameter(torch.ones(2))]
    >>> lerp(a, p, 0.25); lerp(numpy_views(p, a), None, 0.5); a[0].tolist()
    [0.625, 0.625]
    """
    if params is None:
        w = np.float32(weight)
        for p, avg, delta in cast(Views, averages):
            np.subtract(p, avg, out=delta)
            delta *= w
            avg += delta
        return
    tensors = list(cast("list[Tensor]", averages))
    if skip is None:
        torch._foreach_lerp_(tensors, [p.detach() for p in params], weight)
        return
    deltas = torch._foreach_sub([p.detach() for p in params], tensors)
    torch._foreach_mul_(deltas, (1.0 - skip) * weight)
    torch._foreach_add_(tensors, deltas)


class ParameterAverages:
    """Running averages of all parameters of ``net``, started at their current values.

    Each :meth:`update` after a step on ``n`` samples moves the averages towards the
    parameters by ``1 - exp(-n / horizon)`` (a shorter time constant over the first samples,
    see :meth:`span`); averages are updated in place, so views of them
    (NumPy inference) stay valid until a resize replaces them.

    Parameters
    ----------
    net
        The network whose parameters are averaged.
    horizon
        Samples over which the average extends (its time constant), > 0.

    Examples
    --------
    >>> from streamdas.model import DASNet, NetConfig
    >>> net = DASNet(NetConfig(n_inputs=2, hidden_sizes=(3,), n_outputs=1))
    >>> avg = ParameterAverages(net, horizon=100)
    >>> b = net.layers[-1].bias
    >>> with torch.no_grad():
    ...     _ = b.fill_(1.0), avg.get(b).fill_(0.0)
    >>> avg.update(net, n=100, seen=1000)        # 1 - exp(-1) of the way
    >>> round(avg.get(b).item(), 4)
    0.6321
    >>> net.remove_units(0, [0, 2], optimizer=avg)   # kept aligned on resizes
    >>> avg.get(net.hidden[0].weight).shape
    torch.Size([2, 2])
    """

    def __init__(self, net: nn.Module, horizon: float) -> None:
        if not horizon > 0:
            raise ValueError(f"horizon must be > 0, got {horizon}")
        self.horizon = float(horizon)
        self.state: dict[nn.Parameter, dict[str, Tensor]] = {
            p: {POLYAK_KEY: p.detach().clone()} for p in net.parameters()
        }
        self._cached: tuple[int, Views] | None = None

    def __getstate__(self) -> dict[str, object]:
        # The cached views share memory with *these* tensors: a copy rebuilds its own.
        return {**self.__dict__, "_cached": None}

    def follower(self) -> Follower:
        """How resizes treat these averages: grown units and new inputs start at zero (growth
        adds nothing to the averaged outputs); new output units (classes) at their values, as
        a zero row would give a new class logit 0 against the others' learned ones."""
        return Follower(self, outputs="values")

    def span(self, seen: int) -> float:
        """The average's time constant after ``seen`` samples: ``horizon``, but at most
        :data:`WARMUP_FRACTION` of ``seen``, so the first weights (random, then fast-changing)
        leave the average soon.

        >>> from streamdas.model import DASNet, NetConfig
        >>> avg = ParameterAverages(DASNet(NetConfig(n_inputs=1, hidden_sizes=(1,), n_outputs=1)), 100)
        >>> avg.span(10), avg.span(1000), avg.warm(300), avg.warm(400)
        (3.0, 100.0, False, True)
        """
        return max(min(self.horizon, WARMUP_FRACTION * seen), 1e-9)

    def warm(self, seen: int) -> bool:
        """Whether the time constant has reached ``horizon`` (it no longer changes)."""
        return WARMUP_FRACTION * seen >= self.horizon

    def get(self, param: nn.Parameter) -> Tensor:
        """The average of ``param``."""
        return self.state[param][POLYAK_KEY]

    def named(self, net: nn.Module) -> dict[str, Tensor]:
        """Parameter name -> average, for ``torch.func.functional_call`` and checkpoints."""
        return {name: self.get(p) for name, p in net.named_parameters()}

    def _views(self, net: nn.Module) -> Views | None:
        """:func:`numpy_views` of every parameter, rebuilt only when the network is resized
        (its ``structure_version``)."""
        version = getattr(net, "structure_version", None)
        if version is not None and self._cached is not None and self._cached[0] == version:
            return self._cached[1]
        params = list(net.parameters())
        views = numpy_views(params, [self.get(p) for p in params])
        self._cached = None if version is None or views is None else (version, views)
        return views

    def update(self, net: nn.Module, n: int, seen: int, skip: Tensor | None = None) -> None:
        """Fold the parameters in after a step on ``n`` samples, ``seen`` in all so far.

        ``skip`` (a 0-d float tensor on the device, 1 for a skipped batch) leaves the averages
        unchanged without a host round trip (sync-free steps and CUDA graphs).
        """
        weight = 1.0 - math.exp(-n / self.span(seen))
        views = self._views(net) if skip is None else None
        if views is not None:
            lerp(views, None, weight)
            return
        params = list(net.parameters())
        lerp([self.get(p) for p in params], params, weight, skip)

    def load(self, net: nn.Module, named: dict[str, Tensor]) -> None:
        """Take averages saved by :meth:`named`; raises ``ValueError`` if one does not fit
        (a tensor a checkpoint may not hold, another shape or dtype than its parameter's, or
        a non-finite value); nothing changes then."""
        params = dict(net.named_parameters())
        if not isinstance(named, dict) or set(named) != set(params):
            raise ValueError("parameter averages do not name the network's parameters")
        for name, value in named.items():
            p = params[name]
            try:
                checkpoint.check_tensor(value, f"average of {name!r}", dtype=p.dtype, shape=p.shape)
            except ValueError as exc:
                raise ValueError(f"average of {name!r} does not fit its parameter: {exc}") from None
        for name, value in named.items():
            p = params[name]
            self.state[p] = {POLYAK_KEY: value.detach().to(p.device).clone()}
        self._cached = None
