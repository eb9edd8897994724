"""Hidden-layer activations: one registry, each entry with its torch and NumPy forms.

Every part of streamdas that evaluates an activation reads it from :data:`ACTIVATIONS`: the torch
network (:mod:`streamdas.model`), the NumPy training path (:mod:`streamdas.backprop`: forward and
derivative) and NumPy one-row inference (:mod:`streamdas.fastpath`: forward). Adding an
activation is one entry here; the equivalence tests iterate over this registry.

DAS needs ``f(0) = 0`` (a unit whose incoming parameters are all zero must contribute nothing):
entries that break it are kept so the error can name them, and are rejected when a network is
built (:func:`streamdas.model.make_activation`).

Examples
--------
>>> act = ACTIVATIONS["selu"]
>>> act.torch()
SELU()
>>> a = np.array([-1.0, 0.0, 2.0], dtype=np.float32)
>>> np.allclose(act.forward(a), torch.nn.functional.selu(torch.from_numpy(a)).numpy())
True
>>> sorted(name for name, entry in ACTIVATIONS.items() if entry.numpy)
['elu', 'identity', 'relu', 'selu', 'tanh']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch  # noqa: F401  (doctests)
from torch import nn

__all__ = ["ACTIVATIONS", "SELU_ALPHA", "SELU_SCALE", "Activation"]

#: SELU's constants (Klambauer et al. 2017), as torch uses them.
SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805

#: ``forward(a) -> h`` (``a`` is left unchanged) and ``derivative(a, h) -> dh/da``, elementwise.
Forward = Callable[[np.ndarray], np.ndarray]
Derivative = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Activation:
    """One activation: its torch module and, where NumPy paths cover it, its NumPy forms.

    Parameters
    ----------
    name
        Registry key (the ``activation`` of :class:`~streamdas.NetConfig`).
    torch
        The ``torch.nn`` module class.
    forward
        NumPy forward pass on float32 arrays (``None``: the NumPy paths fall back to torch).
    derivative
        NumPy derivative given the pre-activation and the forward output, following torch's
        autograd convention at kinks.
    """

    name: str
    torch: type[nn.Module]
    forward: Forward | None = None
    derivative: Derivative | None = None

    @property
    def numpy(self) -> bool:
        """Whether the NumPy paths (training and one-row inference) cover this activation."""
        return self.forward is not None and self.derivative is not None


def _selu(a: np.ndarray) -> np.ndarray:
    neg = np.minimum(a, 0.0)
    np.expm1(neg, out=neg)
    neg *= SELU_ALPHA * SELU_SCALE
    h = np.maximum(a, 0.0)
    h *= SELU_SCALE
    h += neg
    return h


def _selu_grad(a: np.ndarray, h: np.ndarray) -> np.ndarray:
    # a > 0: scale; a <= 0: scale * alpha * exp(a) = h + scale * alpha (torch's convention at 0)
    return np.where(a > 0, np.float32(SELU_SCALE), h + np.float32(SELU_ALPHA * SELU_SCALE))


def _elu(a: np.ndarray) -> np.ndarray:
    return np.where(a > 0, a, np.expm1(np.minimum(a, 0.0)))


def _elu_grad(a: np.ndarray, h: np.ndarray) -> np.ndarray:
    return np.where(a > 0, np.float32(1.0), h + np.float32(1.0))


def _relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0.0)


def _relu_grad(a: np.ndarray, h: np.ndarray) -> np.ndarray:
    # A boolean mask: multiplying by it is multiplying by 1.0 or 0.0 (one cast-free call fewer).
    return a > 0


def _tanh_grad(a: np.ndarray, h: np.ndarray) -> np.ndarray:
    return np.float32(1.0) - h * h


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _identity_grad(a: np.ndarray, h: np.ndarray) -> np.ndarray:
    return np.ones_like(a)


#: All activations by name. Those with ``f(0) != 0`` (sigmoid, softplus) are listed only so the
#: error that rejects them can name them.
ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("selu", nn.SELU, _selu, _selu_grad),
        Activation("relu", nn.ReLU, _relu, _relu_grad),
        Activation("elu", nn.ELU, _elu, _elu_grad),
        Activation("tanh", nn.Tanh, np.tanh, _tanh_grad),
        Activation("gelu", nn.GELU),
        Activation("leaky_relu", nn.LeakyReLU),
        Activation("silu", nn.SiLU),
        Activation("identity", nn.Identity, _identity, _identity_grad),
        Activation("sigmoid", nn.Sigmoid),
        Activation("softplus", nn.Softplus),
    )
}
