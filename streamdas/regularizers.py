"""Structured-sparsity regularizers on the incoming parameters of hidden units.

Each regularizer acts on the *hidden* layers only (never the output layer). A unit's incoming
parameters are its weight row (a whole filter, for a convolution) and its bias. Every
regularizer is ``sum_j s_j * m_j``: a :class:`UnitMeasure` ``m_j`` of unit ``j``'s incoming
parameters and per-unit strengths ``s_j = alpha * f(j)``, each written once. From them the base
class derives the penalty value (for reporting and autograd), a fast in-place (sub)gradient step
into ``.grad`` that equals autograd's gradient of the penalty, and the same step on NumPy arrays.

:class:`WeightedL1` is the paper's equation (1):
``alpha * sum_l sum_j f(j) * (sum_k |W_ljk| + |b_lj|)``, with ``j`` counted from 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn  # noqa: F401  (nn: doctests)

if TYPE_CHECKING:
    from streamdas.model import Layer

__all__ = [
    "ABS_SUM",
    "L1",
    "L2_NORM",
    "WEIGHT_FUNCTIONS",
    "GroupL21",
    "NoRegularizer",
    "Regularizer",
    "UnitMeasure",
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


class _TorchOps:
    """The array operations of the formulas, on torch tensors (autograd and the manual path)."""

    @staticmethod
    def abs(a: Tensor) -> Tensor:
        return a.abs()

    @staticmethod
    def sign(a: Tensor) -> Tensor:
        return a.sign()

    @staticmethod
    def square(a: Tensor) -> Tensor:
        return a.pow(2)

    @staticmethod
    def sqrt(a: Tensor) -> Tensor:
        return a.sqrt()

    @staticmethod
    def row_sums(a: Tensor) -> Tensor:
        return a.flatten(1).sum(1)

    @staticmethod
    def column(v: Tensor, like: Tensor) -> Tensor:
        return v.view(-1, *([1] * (like.dim() - 1)))

    @staticmethod
    def ratio(num: Tensor, den: Tensor) -> Tensor:
        """``num / den`` where ``den > 0``, else 0."""
        return torch.where(den > 0, den.clamp_min(1e-30).reciprocal() * num, torch.zeros_like(den))


class _NumpyOps:
    """The same operations on NumPy arrays (the CPU fast path of :mod:`streamdas.backprop`)."""

    abs = staticmethod(np.abs)
    sign = staticmethod(np.sign)
    sqrt = staticmethod(np.sqrt)

    @staticmethod
    def square(a: np.ndarray) -> np.ndarray:
        return a * a

    @staticmethod
    def row_sums(a: np.ndarray) -> np.ndarray:
        return a.reshape(a.shape[0], -1).sum(1)

    @staticmethod
    def column(v: np.ndarray, like: np.ndarray) -> np.ndarray:
        return v.reshape(-1, *([1] * (like.ndim - 1)))

    @staticmethod
    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        out = np.zeros_like(den)
        np.divide(num, den, out=out, where=den > 0)
        return out


class UnitMeasure:
    """How much of a unit's incoming parameters there is, ``m_j(W, b)``, and the (sub)gradient of
    ``sum_j s_j * m_j`` for per-unit strengths ``s``: each formula written once, over the
    operations of either array library (``ops``).

    >>> w, b = torch.tensor([[3.0, -4.0]]), torch.tensor([0.0])
    >>> float(ABS_SUM.values(_TorchOps, w, b)[0]), float(L2_NORM.values(_TorchOps, w, b)[0])
    (7.0, 5.0)
    """

    def values(self, ops: Any, w: Any, b: Any) -> Any:
        """``m_j`` for every unit ``j`` (a vector, differentiable on torch tensors)."""
        raise NotImplementedError

    def gradient(self, ops: Any, w: Any, b: Any, strengths: Any) -> tuple[Any, Any]:
        """The (sub)gradient of ``sum_j strengths_j * m_j`` with respect to ``w`` and ``b``."""
        raise NotImplementedError


class _AbsSum(UnitMeasure):
    """``m_j = sum_k |W_jk| + |b_j|``; subgradient ``s_j * sign``."""

    def values(self, ops: Any, w: Any, b: Any) -> Any:
        return ops.row_sums(ops.abs(w)) + ops.abs(b)

    def gradient(self, ops: Any, w: Any, b: Any, strengths: Any) -> tuple[Any, Any]:
        return ops.sign(w) * ops.column(strengths, w), ops.sign(b) * strengths


class _L2Norm(UnitMeasure):
    """``m_j = sqrt(sum_k W_jk^2 + b_j^2)``; gradient ``s_j * W / m_j`` (0 at ``m_j = 0``)."""

    def values(self, ops: Any, w: Any, b: Any) -> Any:
        return ops.sqrt(ops.row_sums(ops.square(w)) + ops.square(b))

    def gradient(self, ops: Any, w: Any, b: Any, strengths: Any) -> tuple[Any, Any]:
        inv = ops.ratio(strengths, self.values(ops, w, b))
        return w * ops.column(inv, w), b * inv


#: the unit measures of the regularizers below
ABS_SUM: UnitMeasure = _AbsSum()
L2_NORM: UnitMeasure = _L2Norm()


class Regularizer:
    """``sum_l sum_j s_j * m_j(W_l, b_l)`` over the hidden layers: a :class:`UnitMeasure` ``m``
    and per-unit strengths ``s_j = alpha * f(j)`` (``f = 1`` unless a subclass weights the
    units). The base class is no penalty at all (the paper's "None" baseline).

    The penalty (autograd), its manual gradient on torch tensors and its gradient on NumPy
    arrays are all derived here from the measure and the strengths.
    """

    name = "none"
    #: the measure of a unit's incoming parameters (None: no penalty)
    measure: UnitMeasure | None = None
    #: whether every unit has the same strength ``alpha`` (the penalty is then ``alpha * sum m_j``)
    uniform = True

    def __init__(self, alpha: float = 0.0) -> None:
        self._cache: dict[tuple[int, torch.dtype, torch.device], Tensor] = {}
        self._np_cache: dict[tuple[int, np.dtype], np.ndarray] = {}
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
        self._cache.clear()
        self._np_cache.clear()

    def __setstate__(self, state: dict[str, Any]) -> None:
        # objects pickled when only WeightedL1 cached its coefficients
        self.__dict__.update(state)
        self.__dict__.setdefault("_cache", {})
        self.__dict__.setdefault("_np_cache", {})

    def unit_weights(self, j: Tensor) -> Tensor:
        """``f(j)`` for the float64 unit indices ``j`` (counted from 1)."""
        return torch.ones_like(j)

    def coefficients(self, n: int, like: Tensor) -> Tensor:
        """The strengths ``alpha * f(j)`` for j = 1..n, in ``like``'s dtype and device, cached."""
        key = (n, like.dtype, like.device)
        coef = self._cache.get(key)
        if coef is None:
            j = torch.arange(1, n + 1, dtype=torch.float64)
            coef = (self.alpha * self.unit_weights(j)).to(dtype=like.dtype, device=like.device)
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = coef
        return coef

    def _coefficients_np(self, n: int, dtype: np.dtype) -> np.ndarray:
        key = (n, np.dtype(dtype))
        coef = self._np_cache.get(key)
        if coef is None:
            coef = self.coefficients(n, torch.empty(0)).double().numpy().astype(dtype)
            if len(self._np_cache) > 64:
                self._np_cache.clear()
            self._np_cache[key] = coef
        return coef

    def penalty(self, layers: Sequence[Layer]) -> Tensor:
        """The regularization term over ``layers`` (differentiable)."""
        measure = self.measure
        if measure is None:
            return torch.zeros(())
        if self.uniform:
            sums = (measure.values(_TorchOps, layer.weight, layer.bias).sum() for layer in layers)
            return self.alpha * sum(sums, torch.zeros(()))
        total = torch.zeros(())
        for layer in layers:
            m = measure.values(_TorchOps, layer.weight, layer.bias)
            total = total + (self.coefficients(m.numel(), m) * m).sum()
        return total

    @torch.no_grad()
    def add_grad(self, layers: Sequence[Layer]) -> None:
        """Add the (sub)gradient of :meth:`penalty` to each parameter's ``.grad`` in place."""
        measure = self.measure
        if measure is None or self.alpha == 0:
            return
        for layer in layers:
            w, b = layer.weight, layer.bias
            gw, gb = measure.gradient(_TorchOps, w, b, self.coefficients(w.shape[0], w))
            _accumulate(w, gw)
            _accumulate(b, gb)

    def add_grad_arrays(
        self, params: Sequence[tuple[np.ndarray, np.ndarray]], grads: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        """:meth:`add_grad` on NumPy arrays: ``(weight, bias)`` of each hidden layer and their
        gradients, updated in place (the CPU fast path of :mod:`streamdas.backprop`)."""
        measure = self.measure
        if measure is None or self.alpha == 0:
            return
        for (w, b), (gw, gb) in zip(params, grads, strict=True):
            dw, db = measure.gradient(_NumpyOps, w, b, self._coefficients_np(w.shape[0], w.dtype))
            gw += dw
            gb += db

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
    measure = ABS_SUM


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
    measure = ABS_SUM
    uniform = False

    def __init__(self, alpha: float = 2e-5, f: str | Callable[[Tensor], Tensor] = "identity") -> None:
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

    def unit_weights(self, j: Tensor) -> Tensor:
        return self.f(j)

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
    measure = L2_NORM


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
