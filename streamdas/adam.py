"""``torch.optim.Adam``'s update computed in NumPy, on the optimizer's own state.

Used by the trainer's CPU fast path together with :mod:`streamdas.backprop`. On a stream's tiny
minibatches a torch optimizer step is mostly dispatch overhead, and alternating torch and NumPy
code in one step slows both (we measured fused Adam at 41 us a step alone and 87 us when a NumPy
backward pass ran between its calls; the NumPy update measured 44 us in the same loop). The update
here is torch's own (``_single_tensor_adam``, non-capturable) written out elementwise:

    m = m + (1 - beta1) * (g - m)
    v = beta2 * v + (1 - beta2) * g * g
    p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

It reads and writes the tensors in ``optimizer.state`` through NumPy views (``exp_avg``,
``exp_avg_sq``, ``step``), so the torch optimizer stays the single source of truth: checkpoints,
``edit_parameter`` (resizing) and ``optimizer.step()`` keep working and agree with it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["NumpyAdam"]


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
        self._key: tuple[int, ...] = ()
        self._views: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def __getstate__(self) -> dict[str, object]:
        return {"optimizer": self.optimizer, "_key": (), "_views": []}  # views are rebuilt

    def _group_ok(self) -> bool:
        opt = self.optimizer
        if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1:
            return False
        g = opt.param_groups[0]
        return not (g["amsgrad"] or g["maximize"] or g["weight_decay"] or g["capturable"]
                    or g["differentiable"] or isinstance(g["lr"], torch.Tensor))

    def _views_for(self, params: list[torch.nn.Parameter]
                   ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None:
        """NumPy views of (param, exp_avg, exp_avg_sq, step) per parameter, cached while the
        state tensors stay the same objects (resizing replaces them)."""
        state = self.optimizer.state
        tensors = []
        for p in params:
            st = state.get(p)
            if not st or "exp_avg" not in st:
                return None
            tensors.append((p, st["exp_avg"], st["exp_avg_sq"], st["step"]))
        key = tuple(id(t) for quad in tensors for t in quad)
        if key != self._key:
            for quad in tensors:
                if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in quad):
                    return None
            self._views = [(p.detach().numpy(), m.numpy(), v.numpy(), s.numpy())
                           for p, m, v, s in tensors]
            self._key = key
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
        with np.errstate(over="ignore"):  # |g| > 1.8e19: v = inf, as torch gives (silently)
            self._update(views, grads, lr, beta1, beta2, eps)
        return True

    @staticmethod
    def _update(views: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                grads: list[np.ndarray], lr: float, beta1: float, beta2: float, eps: float) -> None:
        c1, c2, b2 = np.float32(1.0 - beta1), np.float32(1.0 - beta2), np.float32(beta2)
        eps32 = np.float32(eps)
        for (p, m, v, s), g in zip(views, grads, strict=True):
            t = float(s) + 1.0
            s[...] = t
            step_size = np.float32(lr / (1.0 - beta1**t))
            bc2_sqrt = np.float32(math.sqrt(1.0 - beta2**t))
            tmp = g - m
            tmp *= c1
            m += tmp  # m.lerp_(g, 1 - beta1)
            v *= b2
            np.multiply(g, g, out=tmp)
            tmp *= c2
            v += tmp
            np.sqrt(v, out=tmp)
            tmp /= bc2_sqrt
            tmp += eps32
            np.divide(m, tmp, out=tmp)
            tmp *= step_size
            p -= tmp
