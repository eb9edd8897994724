"""Minibatch loss and gradients of a CPU MLP in NumPy, without autograd.

A streaming learner takes an optimizer step every few samples on a tiny minibatch. At that
size torch's autograd costs far more in per-operator dispatch than in arithmetic, so the pass
is written out in NumPy on *views* of the same parameter storage (``Tensor.numpy()`` shares
memory; docs/benchmarks.md, "The CPU fast path"). :class:`NumpyBackprop` computes exactly what
autograd would (tested to float32 rounding) for the networks it supports: CPU, float32, fully
connected, no dropout, an activation with NumPy forms in
:data:`streamdas.activations.ACTIVATIONS`, cross-entropy or MSE loss. Everything else
(convolutions, dropout, GPUs, other activations) keeps the autograd path.

The gradients are returned in the order of :attr:`streamdas.DASNet.layers` (weight then bias of
each hidden layer, then of the output layer). They are written into buffers that persist until
the network changes shape, and :attr:`NumpyBackprop.grad_tensors` are torch views of the same
memory: set once as the parameters' ``.grad``, the optimizer sees every new gradient without a
copy (fresh ``.grad`` tensors every step would cost time in the setter and in fused Adam).
"""

from __future__ import annotations

import numpy as np
import torch

from streamdas.activations import ACTIVATIONS
from streamdas.model import DASNet, NetConfig  # noqa: F401  (NetConfig: doctests)

__all__ = ["NumpyBackprop"]

_LOSSES = ("cross_entropy", "mse")


class NumpyBackprop:
    """Mean minibatch loss and its parameter gradients for a CPU MLP :class:`DASNet`.

    Parameters
    ----------
    net
        The network; the views of its parameters are rebuilt when a parameter is resized
        (``DASNet.structure_version``), so in-place optimizer steps are always seen.
    loss
        ``"cross_entropy"`` (targets: class indices) or ``"mse"`` (targets: same shape as the
        outputs), both averaged as torch's default ``reduction="mean"`` does.

    Examples
    --------
    >>> net = DASNet(NetConfig(n_inputs=3, hidden_sizes=(5, 4), n_outputs=2))
    >>> bp = NumpyBackprop(net, "cross_entropy")
    >>> bp.supported
    True
    >>> x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    >>> y = (x[:, 0] > 0).long()
    >>> loss, grads = bp(x.numpy(), y.numpy())
    >>> ref = torch.nn.functional.cross_entropy(net(x), y)
    >>> ref.backward()
    >>> abs(loss - ref.item()) < 1e-6
    True
    >>> all(np.allclose(g, p.grad.numpy(), atol=1e-6) for g, p in zip(grads, bp.parameters()))
    True
    """

    def __init__(self, net: DASNet, loss: str) -> None:
        self.net = net
        self.loss = loss
        config = net._config
        first = next(net.parameters())
        act = ACTIVATIONS.get(config.activation)
        self.supported = (
            net.n_conv == 0
            and not any(config.dropout)
            and act is not None
            and act.numpy
            and loss in _LOSSES
            and first.device.type == "cpu"
            and first.dtype == torch.float32
        )
        if act is None or not act.numpy:
            act = ACTIVATIONS["identity"]  # never called: the network is not supported
        assert act.forward is not None and act.derivative is not None
        self.act, self.act_grad = act.forward, act.derivative
        self._version = -1
        self._weights: list[np.ndarray] = []
        self._biases: list[np.ndarray] = []
        self._grads: list[np.ndarray] = []
        self._rows = np.arange(0)  # row indices of the last batch size (cross-entropy)
        self.flat_grad = np.zeros(0, dtype=np.float32)
        #: torch views of the gradient buffers, in :meth:`parameters` order (rebuilt on resize).
        self.grad_tensors: list[torch.Tensor] = []

    def __getstate__(self) -> dict[str, object]:
        # The views share memory with *this* net's tensors: a copy rebuilds its own on first use.
        state = self.__dict__.copy()
        state.update(
            _version=-1,
            _weights=[],
            _biases=[],
            _grads=[],
            grad_tensors=[],
            flat_grad=np.zeros(0, dtype=np.float32),
        )
        return state

    def parameters(self) -> list[torch.nn.Parameter]:
        """The parameters in the order of the gradients."""
        return [p for layer in self.net.layers for p in (layer.weight, layer.bias)]

    def _refresh(self) -> None:
        version = self.net.structure_version  # read first: an edit during the rebuild shows
        layers = self.net.layers
        self._weights = [layer.weight.detach().numpy() for layer in layers]
        self._biases = [layer.bias.detach().numpy() for layer in layers]
        params = self.parameters()
        #: all gradients, contiguous (one finiteness check covers them)
        self.flat_grad = np.zeros(sum(p.numel() for p in params), dtype=np.float32)
        # NumPy views of it (their .base is flat_grad: NumpyAdam then steps on it whole)
        self._grads, start = [], 0
        for p in params:
            self._grads.append(self.flat_grad[start : start + p.numel()].reshape(tuple(p.shape)))
            start += p.numel()
        self.grad_tensors = [torch.from_numpy(g) for g in self._grads]
        self._version = version

    def accepts(self, x_shape: torch.Size, y_shape: torch.Size, y_dtype: torch.dtype) -> bool:
        """Whether a batch of these shapes is one this class computes as torch would (class
        indices for cross-entropy, not probabilities; MSE targets shaped like the outputs,
        without broadcasting)."""
        if len(x_shape) != 2 or x_shape[0] == 0:
            return False
        if self.loss == "cross_entropy":
            return y_dtype == torch.int64 and tuple(y_shape) == (x_shape[0],)
        return y_dtype == torch.float32 and tuple(y_shape) == (x_shape[0], self.net.output.weight.shape[0])

    def hidden_pairs(
        self, grads: list[np.ndarray]
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
        """``(weight, bias)`` views of each hidden layer, and the matching pairs of ``grads``
        (as returned by the last call): what a regularizer's ``add_grad_arrays`` takes."""
        n = len(self._weights) - 1
        return (
            list(zip(self._weights[:n], self._biases[:n], strict=True)),
            list(zip(grads[0 : 2 * n : 2], grads[1 : 2 * n : 2], strict=True)),
        )

    def grads_finite(self) -> bool:
        """Whether every gradient of the last call is finite (one pass over :attr:`flat_grad`)."""
        return bool(np.isfinite(self.flat_grad).all())

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
        """Loss (a float, may be non-finite) and gradients ``[dW_0, db_0, ..., dW_out, db_out]``
        (the buffers behind :attr:`grad_tensors`, overwritten by the next call)."""
        if not self.supported:
            raise RuntimeError("this network needs autograd (see NumpyBackprop.supported)")
        if self._version != self.net.structure_version:
            self._refresh()
        weights, biases, grads = self._weights, self._biases, self._grads
        n_hidden = len(weights) - 1
        acts = [x]  # inputs of each layer
        pre = []  # pre-activations of hidden layers
        h = x
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for i in range(n_hidden):
                a = h @ weights[i].T
                a += biases[i]
                h = self.act(a)
                pre.append(a)
                acts.append(h)
            out = h @ weights[-1].T
            out += biases[-1]
            loss, g = self._loss_grad(out, y)
            for i in range(n_hidden, -1, -1):
                np.matmul(g.T, acts[i], out=grads[2 * i])
                np.add.reduce(g, axis=0, out=grads[2 * i + 1])
                if i:
                    g = g @ weights[i]
                    g *= self.act_grad(pre[i - 1], acts[i])
        return loss, grads

    def _loss_grad(self, out: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean loss and its gradient with respect to the outputs."""
        n = out.shape[0]
        if self.loss == "mse":
            diff = out - y.reshape(out.shape)
            loss = float(np.mean(diff.astype(np.float64) ** 2))
            diff *= np.float32(2.0 / diff.size)
            return loss, diff
        rows = self._rows if len(self._rows) == n else np.arange(n)
        self._rows = rows
        shifted = out - np.maximum.reduce(out, axis=1, keepdims=True)
        e = np.exp(shifted)
        total = np.add.reduce(e, axis=1, keepdims=True)
        # = log(total).mean() - shifted[rows, y].mean(), without the wrappers of .mean()
        loss = float(np.add.reduce(np.log(total[:, 0])) / n - np.add.reduce(shifted[rows, y]) / n)
        e /= total
        e[rows, y] -= 1.0
        e *= np.float32(1.0 / n)
        return loss, e
