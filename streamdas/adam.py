"""``torch.optim.Adam``'s update computed in NumPy, on the optimizer's own state.

Used by the trainer's CPU fast path together with :mod:`streamdas.backprop`. On a stream's tiny
minibatches a torch optimizer step is mostly dispatch overhead, and alternating torch and NumPy
code in one step slows both (docs/benchmarks.md, "The CPU fast path"). The update here is
torch's own (``_single_tensor_adam``, non-capturable) written out elementwise:

    m = m + (1 - beta1) * (g - m)
    v = beta2 * v + (1 - beta2) * g * g
    p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

It reads and writes the tensors in ``optimizer.state`` through NumPy views (``exp_avg``,
``exp_avg_sq``, ``step``), so the torch optimizer stays the single source of truth: checkpoints,
``edit_parameter`` (resizing) and ``optimizer.step()`` keep working and agree with it.

Each elementwise NumPy call has a fixed overhead whatever its size, and a small network's
parameters are a few hundred to a few thousand floats, so the update runs on one flat buffer per
moment instead of one call per parameter and operation: when the state tensors change (the first
step, every resize, a load) and every parameter is at the same step count, they are moved into
one contiguous buffer each (``exp_avg``, ``exp_avg_sq`` and ``step`` become views of it: same
values, same keys), and gradients arrive flat as well (the trainer's backward pass writes them
into one buffer; others are gathered). The arithmetic per element is unchanged, so the results
are bitwise those of the per-parameter update (which remains for unequal step counts).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["NumpyAdam"]

#: NumPy views of (param, exp_avg, exp_avg_sq, step), one tuple per parameter.
_Views = list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
#: Adam's (lr, beta1, beta2, eps).
_Hyper = tuple[float, float, float, float]


class NumpyAdam:
    """Apply ``optimizer``'s Adam update in NumPy when it can do so exactly.

    Parameters
    ----------
    optimizer
        A ``torch.optim.Adam`` (fused or not). Other optimizers, several parameter groups,
        ``amsgrad``, ``maximize``, weight decay, tensor learning rates, non-CPU or non-float32
        parameters, and parameters without state yet (before the first torch step) are not
        covered: :meth:`step` then returns ``False`` and the caller uses ``optimizer.step()``.

    Examples
    --------
    >>> p = torch.nn.Parameter(torch.ones(3))
    >>> opt = torch.optim.Adam([p], lr=0.1)
    >>> p.grad = torch.ones(3); opt.step()     # torch creates the state
    >>> NumpyAdam(opt).step([p], [np.ones(3, dtype=np.float32)])
    True
    >>> p.detach().numpy().round(4).tolist()
    [0.8, 0.8, 0.8]
    >>> float(opt.state[p]["step"])
    2.0
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self._views: _Views = []
        self._flat: _Flat | None = None
        # (param, its state dict, exp_avg, exp_avg_sq, step) the views were made from
        self._seen: list[
            tuple[torch.nn.Parameter, dict[str, Any], torch.Tensor, torch.Tensor, torch.Tensor]
        ] = []

    def __getstate__(self) -> dict[str, object]:  # views and caches are rebuilt
        return {"optimizer": self.optimizer, "_views": [], "_flat": None, "_seen": []}

    def _group_ok(self) -> bool:
        opt = self.optimizer
        if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1:
            return False
        g = opt.param_groups[0]
        return not (
            g["amsgrad"]
            or g["maximize"]
            or g["weight_decay"]
            or g["capturable"]
            or g["differentiable"]
            or isinstance(g["lr"], torch.Tensor)
        )

    def _views_for(self, params: list[torch.nn.Parameter]) -> _Views | None:
        """NumPy views of (param, exp_avg, exp_avg_sq, step) per parameter, cached while the
        parameters, their state dicts and state tensors stay the same objects (resizing and
        loading replace them)."""
        state = self.optimizer.state
        seen = self._seen
        if len(seen) == len(params):
            for p, (q, st, m, v, s) in zip(params, seen, strict=True):
                if (
                    p is not q
                    or state.get(p) is not st
                    or st.get("exp_avg") is not m
                    or st.get("exp_avg_sq") is not v
                    or st.get("step") is not s
                ):
                    break
            else:
                return self._views
        self._seen, self._views, self._flat = [], [], None
        tensors = []
        for p in params:
            entry = state.get(p)
            if not entry or "exp_avg" not in entry:
                return None
            quad = (p, entry["exp_avg"], entry["exp_avg_sq"], entry["step"])
            if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in quad):
                return None
            tensors.append(quad)
        self._flat = _Flat.adopt(params, [quad[1:] for quad in tensors], state)
        if self._flat is not None:  # the state tensors are now views of the flat buffers
            tensors = [(p, state[p]["exp_avg"], state[p]["exp_avg_sq"], state[p]["step"]) for p in params]
        self._views = [(p.detach().numpy(), m.numpy(), v.numpy(), s.numpy()) for p, m, v, s in tensors]
        self._seen = [(p, state[p], m, v, s) for p, m, v, s in tensors]
        return self._views

    def step(self, params: list[torch.nn.Parameter], grads: list[np.ndarray]) -> bool:
        """One Adam step of ``params`` with ``grads`` (same order); False if not covered."""
        if not self._group_ok():
            return False
        views = self._views_for(params)
        if views is None:
            return False
        group = self.optimizer.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        hyper = (lr, beta1, beta2, eps)
        with np.errstate(over="ignore"):  # |g| > 1.8e19: v = inf, as torch gives (silently)
            if self._flat is not None:
                self._flat.update(views, grads, hyper)
            else:
                self._update(views, grads, hyper)
        return True

    @staticmethod
    def _update(views: _Views, grads: list[np.ndarray], hyper: _Hyper) -> None:
        """One parameter at a time (each at its own step count); ``hyper`` is (lr, beta1, beta2, eps)."""
        for (p, m, v, s), g in zip(views, grads, strict=True):
            t = float(s) + 1.0
            s[...] = t
            p -= _moments_and_delta(g, m, v, np.empty_like(g), t, *hyper)


def _moments_and_delta(
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    tmp: np.ndarray,
    t: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> np.ndarray:
    """Update the moments ``m`` and ``v`` with ``g`` in place for step ``t`` and return the
    parameter decrement, written into ``tmp``: torch's non-capturable single-tensor Adam in
    float32, the same operations whatever the arrays' shapes."""
    np.subtract(g, m, out=tmp)
    tmp *= np.float32(1.0 - beta1)
    m += tmp  # m.lerp_(g, 1 - beta1)
    v *= np.float32(beta2)
    np.multiply(g, g, out=tmp)
    tmp *= np.float32(1.0 - beta2)
    v += tmp
    np.sqrt(v, out=tmp)
    tmp /= np.float32(math.sqrt(1.0 - beta2**t))
    tmp += np.float32(eps)
    np.divide(m, tmp, out=tmp)
    tmp *= np.float32(lr / (1.0 - beta1**t))
    return tmp


class _Flat:
    """Adam's moments and step counts of several parameters in one contiguous buffer each, the
    optimizer's state tensors being views of them, and the update computed on the buffers."""

    def __init__(self, shapes: list[tuple[int, ...]]) -> None:
        sizes = [math.prod(shape) for shape in shapes]
        self.offsets = [0, *np.cumsum(sizes).tolist()]
        total = self.offsets[-1]
        self.m, self.v = torch.zeros(total), torch.zeros(total)
        self.steps = torch.zeros(len(shapes))
        self.grad: np.ndarray | None = None  # gathered gradients, when they are not flat
        self.tmp = np.empty(total, np.float32)
        self.tmp_views = [
            self.tmp[a:b].reshape(shape)
            for a, b, shape in zip(self.offsets[:-1], self.offsets[1:], shapes, strict=True)
        ]
        self._m, self._v, self._steps = self.m.numpy(), self.v.numpy(), self.steps.numpy()
        self._grads: list[np.ndarray] = []  # the last gradient arrays found to be flat (held)
        self._grad_base: np.ndarray | None = None

    @classmethod
    def adopt(
        cls,
        params: list[torch.nn.Parameter],
        states: list[tuple[torch.Tensor, ...]],
        state: dict[Any, dict[str, Any]],
    ) -> _Flat | None:
        """Move the ``(exp_avg, exp_avg_sq, step)`` of ``params`` into flat buffers and make
        ``state``'s tensors views of them; None (nothing changed) unless every step count is
        the same single number."""
        steps = [s for _, _, s in states]
        if any(s.numel() != 1 for s in steps) or len({float(s) for s in steps}) != 1:
            return None
        flat = cls([tuple(p.shape) for p in params])
        with torch.no_grad():
            for i, (p, (m, v, _s)) in enumerate(zip(params, states, strict=True)):
                a, b = flat.offsets[i], flat.offsets[i + 1]
                flat.m[a:b].copy_(m.reshape(-1))
                flat.v[a:b].copy_(v.reshape(-1))
                flat.steps[i] = float(steps[0])
                st = state[p]
                st["exp_avg"] = flat.m[a:b].view(p.shape)
                st["exp_avg_sq"] = flat.v[a:b].view(p.shape)
                st["step"] = flat.steps[i].view(steps[i].shape)
        return flat

    def _flat_grad(self, grads: list[np.ndarray]) -> np.ndarray:
        """``grads`` as one flat array: their own buffer when they are consecutive views of one
        (the trainer's backward pass), else a copy gathered into :attr:`grad`."""
        held = self._grads
        if len(held) == len(grads) and all(g is h for g, h in zip(grads, held, strict=True)):
            assert self._grad_base is not None
            return self._grad_base
        base = grads[0].base if grads else None
        if (
            isinstance(base, np.ndarray)
            and base.ndim == 1
            and base.dtype == np.float32
            and base.size == self.offsets[-1]
            and base.flags.c_contiguous
        ):
            start = base.__array_interface__["data"][0]
            if all(
                g.base is base
                and g.dtype == np.float32
                and g.flags.c_contiguous
                and g.size == b - a
                and g.__array_interface__["data"][0] == start + 4 * a
                for g, a, b in zip(grads, self.offsets[:-1], self.offsets[1:], strict=True)
            ):
                self._grads, self._grad_base = list(grads), base
                return base
        if self.grad is None:
            self.grad = np.empty(self.offsets[-1], np.float32)
        for g, a, b in zip(grads, self.offsets[:-1], self.offsets[1:], strict=True):
            self.grad[a:b] = g.reshape(-1)
        return self.grad

    def update(self, views: _Views, grads: list[np.ndarray], hyper: _Hyper) -> None:
        """:meth:`NumpyAdam._update` on the flat buffers (the same float32 operations)."""
        t = float(self._steps[0]) + 1.0
        self._steps[...] = t
        _moments_and_delta(self._flat_grad(grads), self._m, self._v, self.tmp, t, *hyper)
        for (p, _m, _v, _s), d in zip(views, self.tmp_views, strict=True):
            p -= d
