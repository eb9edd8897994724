"""Structured-sparsity regularizers on the incoming parameters of hidden units.

Each regularizer acts on the *hidden* layers only (never the output layer). A unit's incoming
parameters are its weight row (a whole filter, for a convolution) and its bias. Every
regularizer gives both the penalty value (for reporting and autograd) and a fast in-place
(sub)gradient step into ``.grad`` that equals autograd's gradient of the penalty.

:class:`WeightedL1` is the paper's equation (1):
``alpha * sum_l sum_j f(j) * (sum_k |W_ljk| + |b_lj|)``, with ``j`` counted from 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn  # noqa: F401  (nn: doctests)

if TYPE_CHECKING:
    from streamdas.model import Layer

__all__ = [
    "L1",
    "WEIGHT_FUNCTIONS",
    "GroupL21",
    "NoRegularizer",
    "Regularizer",
    "WeightedL1",
    "make_regularizer",
]

#: Named non-decreasing functions with f(0) = 0 for :class:`WeightedL1` (checkpoint-friendly).
WEIGHT_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda j: j,
    "square": lambda j: j * j,
    "sqrt": torch.sqrt,
    "log1p": torch.log1p,
}


def _unit_abs_sums(layer: Layer) -> Tensor:
    """Per unit: sum of |incoming weights| + |bias|."""
    return layer.weight.abs().flatten(1).sum(1) + layer.bias.abs()


class Regularizer:
    """Base class: no penalty at all (the paper's "None" baseline)."""

    name = "none"

    def __init__(self, alpha: float = 0.0) -> None:
        self.alpha = alpha

    @property
    def alpha(self) -> float:
        """The regularization strength; settable at any time (cached coefficients follow)."""
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"alpha must be >= 0, got {value}")
        self._alpha = float(value)
        self._clear_cache()

    def _clear_cache(self) -> None:
        """Forget anything computed from :attr:`alpha` (subclasses that cache override this)."""

    def penalty(self, layers: Sequence[Layer]) -> Tensor:
        """The regularization term over ``layers`` (differentiable)."""
        return torch.zeros(())

    def add_grad(self, layers: Sequence[Layer]) -> None:
        """Add the (sub)gradient of :meth:`penalty` to each parameter's ``.grad`` in place."""

    def add_grad_arrays(
        self, params: Sequence[tuple[np.ndarray, np.ndarray]], grads: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        """:meth:`add_grad` on NumPy arrays: ``(weight, bias)`` of each hidden layer and their
        gradients, updated in place (the CPU fast path of :mod:`streamdas.backprop`)."""

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "alpha": self.alpha}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha:g})"


class NoRegularizer(Regularizer):
    """No regularization.

    >>> NoRegularizer().penalty([])
    tensor(0.)
    """


class L1(Regularizer):
    """Plain L1 on every incoming weight and bias of hidden units: ``alpha * sum |w|``.

    >>> layer = nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = layer.weight.fill_(-1.0), layer.bias.fill_(0.5)
    >>> L1(0.1).penalty([layer])
    tensor(0.5000, grad_fn=<MulBackward0>)
    """

    name = "l1"

    def penalty(self, layers: Sequence[Layer]) -> Tensor:
        return self.alpha * sum((_unit_abs_sums(layer).sum() for layer in layers), torch.zeros(()))

    @torch.no_grad()
    def add_grad(self, layers: Sequence[Layer]) -> None:
        if self.alpha == 0:
            return
        for layer in layers:
            for p in (layer.weight, layer.bias):
                _accumulate(p, p.sign().mul_(self.alpha))

    def add_grad_arrays(
        self, params: Sequence[tuple[np.ndarray, np.ndarray]], grads: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        if self.alpha == 0:
            return
        alpha = np.float32(self.alpha)
        for pair, gpair in zip(params, grads, strict=True):
            for p, g in zip(pair, gpair, strict=True):
                g += np.sign(p) * alpha


class WeightedL1(Regularizer):
    """Weighted L1, the paper's equation (1): unit ``j`` (from 1) gets strength ``alpha * f(j)``.

    Parameters
    ----------
    alpha
        Overall strength.
    f
        Name of a non-decreasing function with f(0) = 0 from :data:`WEIGHT_FUNCTIONS`, or such a
        callable mapping a float tensor of unit indices to weights.

    Examples
    --------
    >>> layer = nn.Linear(3, 2)
    >>> with torch.no_grad():
    ...     _ = layer.weight.fill_(1.0), layer.bias.fill_(1.0)
    >>> # unit 1: 1 * (3 + 1), unit 2: 2 * (3 + 1)  ->  alpha * 12
    >>> WeightedL1(alpha=0.5).penalty([layer]).item()
    6.0
    """

    name = "weighted_l1"

    def __init__(self, alpha: float = 2e-5, f: str | Callable[[Tensor], Tensor] = "identity") -> None:
        self._cache: dict[tuple[int, torch.dtype, torch.device], Tensor] = {}
        self._np_cache: dict[tuple[int, np.dtype], np.ndarray] = {}
        super().__init__(alpha)
        if isinstance(f, str):
            if f not in WEIGHT_FUNCTIONS:
                raise ValueError(f"unknown weight function {f!r}; choose one of {sorted(WEIGHT_FUNCTIONS)}")
            self.f_name: str | None = f
            self.f = WEIGHT_FUNCTIONS[f]
        else:
            self.f_name, self.f = None, f
        probe = self.f(torch.arange(0, 257, dtype=torch.float64))
        if abs(float(probe[0])) > 1e-12 or bool((probe.diff() < -1e-12).any()):
            raise ValueError("f must be non-decreasing with f(0) = 0")

    def _clear_cache(self) -> None:
        self._cache.clear()
        self._np_cache.clear()

    def coefficients(self, n: int, like: Tensor) -> Tensor:
        """``alpha * f(j)`` for j = 1..n, cached per size."""
        key = (n, like.dtype, like.device)
        coef = self._cache.get(key)
        if coef is None:
            j = torch.arange(1, n + 1, dtype=torch.float64)
            coef = (self.alpha * self.f(j)).to(dtype=like.dtype, device=like.device)
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = coef
        return coef

    def penalty(self, layers: Sequence[Layer]) -> Tensor:
        total = torch.zeros(())
        for layer in layers:
            sums = _unit_abs_sums(layer)
            total = total + (self.coefficients(sums.numel(), sums) * sums).sum()
        return total

    @torch.no_grad()
    def add_grad(self, layers: Sequence[Layer]) -> None:
        if self.alpha == 0:
            return
        for layer in layers:
            w, b = layer.weight, layer.bias
            coef = self.coefficients(w.shape[0], w)
            _accumulate(w, w.sign().mul_(coef.view(-1, *([1] * (w.dim() - 1)))))
            _accumulate(b, b.sign().mul_(coef))

    def add_grad_arrays(
        self, params: Sequence[tuple[np.ndarray, np.ndarray]], grads: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        if self.alpha == 0:
            return
        for (w, b), (gw, gb) in zip(params, grads, strict=True):
            coef = self._coefficients_np(w.shape[0], w.dtype)
            tmp = np.sign(w)
            tmp *= coef.reshape(-1, *([1] * (w.ndim - 1)))
            gw += tmp
            tmp = np.sign(b)
            tmp *= coef
            gb += tmp

    def _coefficients_np(self, n: int, dtype: np.dtype) -> np.ndarray:
        key = (n, np.dtype(dtype))
        coef = self._np_cache.get(key)
        if coef is None:
            coef = self.coefficients(n, torch.empty(0)).double().numpy().astype(dtype)
            if len(self._np_cache) > 64:
                self._np_cache.clear()
            self._np_cache[key] = coef
        return coef

    def to_dict(self) -> dict[str, object]:
        if self.f_name is None:
            raise ValueError("a WeightedL1 with a custom f cannot be saved by name; pass f again on load")
        return {"name": self.name, "alpha": self.alpha, "f": self.f_name}

    def __repr__(self) -> str:
        return f"WeightedL1(alpha={self.alpha:g}, f={self.f_name or self.f!r})"


class GroupL21(Regularizer):
    """Group lasso over units (the l2,1 norm of original auto-sizing):
    ``alpha * sum_j sqrt(sum_k W_jk^2 + b_j^2)``.

    >>> layer = nn.Linear(3, 1)
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[2.0, 0.0, 1.0]])), layer.bias.fill_(2.0)
    >>> GroupL21(1.0).penalty([layer]).item()
    3.0
    """

    name = "l21"

    @staticmethod
    def _norms(layer: Layer) -> Tensor:
        return (layer.weight.pow(2).flatten(1).sum(1) + layer.bias.pow(2)).sqrt()

    def penalty(self, layers: Sequence[Layer]) -> Tensor:
        return self.alpha * sum((self._norms(layer).sum() for layer in layers), torch.zeros(()))

    @torch.no_grad()
    def add_grad(self, layers: Sequence[Layer]) -> None:
        if self.alpha == 0:
            return
        for layer in layers:
            w, b = layer.weight, layer.bias
            norms = self._norms(layer)
            inv = torch.where(norms > 0, self.alpha / norms.clamp_min(1e-30), torch.zeros_like(norms))
            _accumulate(w, w * inv.view(-1, *([1] * (w.dim() - 1))))
            _accumulate(b, b * inv)

    def add_grad_arrays(
        self, params: Sequence[tuple[np.ndarray, np.ndarray]], grads: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        if self.alpha == 0:
            return
        for (w, b), (gw, gb) in zip(params, grads, strict=True):
            norms = np.sqrt((w.reshape(w.shape[0], -1) ** 2).sum(1) + b * b)
            inv = np.zeros_like(norms)
            np.divide(np.float32(self.alpha), norms, out=inv, where=norms > 0)
            gw += w * inv.reshape(-1, *([1] * (w.ndim - 1)))
            gb += b * inv


def _accumulate(p: Tensor, g: Tensor) -> None:
    if p.grad is None:
        p.grad = g
    else:
        p.grad.add_(g)


_REGISTRY: dict[str, type[Regularizer]] = {
    "none": NoRegularizer,
    "l1": L1,
    "weighted_l1": WeightedL1,
    "l21": GroupL21,
}


def make_regularizer(name: str | Regularizer, alpha: float = 2e-5, **kwargs: object) -> Regularizer:
    """Build a regularizer by name (``"weighted_l1"``, ``"l21"``, ``"l1"``, ``"none"``).

    >>> make_regularizer("l21", alpha=1e-3)
    GroupL21(alpha=0.001)
    """
    if isinstance(name, Regularizer):
        return name
    if name not in _REGISTRY:
        raise ValueError(f"unknown regularizer {name!r}; choose one of {sorted(_REGISTRY)}")
    if name == "none":
        return NoRegularizer()
    return _REGISTRY[name](alpha, **kwargs)
