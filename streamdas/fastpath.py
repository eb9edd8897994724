"""Per-sample inference without torch's dispatch overhead.

A torch forward pass on one row costs tens of microseconds in dispatch alone. For one-row
prediction the MLP is evaluated in NumPy on *views* of the parameters' storage
(``Tensor.numpy()`` shares memory), so in-place optimizer steps are seen at no cost; the views
are rebuilt only when a parameter is resized (``DASNet.structure_version``).

On vectors of a few dozen floats a NumPy call with a Python scalar operand costs about twice
one with array operands (type resolution), so SELU runs on per-layer constant arrays and
preallocated buffers (docs/benchmarks.md, "The CPU fast path").
"""

from __future__ import annotations

import numpy as np
import torch

from streamdas.activations import ACTIVATIONS, SELU_ALPHA, SELU_SCALE
from streamdas.averaging import ParameterAverages
from streamdas.model import DASNet, NetConfig  # noqa: F401  (NetConfig: doctests)

__all__ = ["NumpyForward"]


class NumpyForward:
    """Evaluate a CPU MLP :class:`DASNet` on one float32 row with NumPy.

    >>> net = DASNet(NetConfig(n_inputs=3, hidden_sizes=(4, 4), n_outputs=2))
    >>> fwd = NumpyForward(net)
    >>> x = np.ones(3, dtype=np.float32)
    >>> bool(np.allclose(fwd(x), net(torch.from_numpy(x)[None]).detach().numpy()[0], atol=1e-6))
    True
    """

    def __init__(self, net: DASNet, averages: ParameterAverages | None = None) -> None:
        self.net = net
        #: evaluate with these averages of the parameters instead (Polyak averaging)
        self.averages = averages
        act = ACTIVATIONS.get(net._config.activation)
        self.supported = (
            net.n_conv == 0 and act is not None and act.numpy and next(net.parameters()).device.type == "cpu"
        )
        #: SELU and ReLU (the classifier's default) run inlined on per-layer constant arrays;
        #: others use the registry's form
        self.selu = net._config.activation == "selu"
        self.relu = net._config.activation == "relu"
        self.act = act.forward if act is not None and act.forward is not None else None
        self._version = -1
        self._layers: list[tuple[np.ndarray, np.ndarray]] = []
        # SELU: per hidden layer (zeros, scale * alpha, scale, scratch), all float32 of its width
        self._selu: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._zeros: list[np.ndarray] = []  # ReLU: per hidden layer, the same zeros

    def __getstate__(self) -> dict[str, object]:
        # The views share memory with *this* net's tensors: a copy rebuilds its own on first use.
        return {**self.__dict__, "_version": -1, "_layers": [], "_selu": [], "_zeros": []}

    def _refresh(self) -> None:
        version = self.net.structure_version  # read first: an edit during the rebuild shows
        avg = self.averages
        self._layers = [
            (layer.weight.detach().numpy(), layer.bias.detach().numpy())
            if avg is None
            else (avg.get(layer.weight).numpy(), avg.get(layer.bias).numpy())
            for layer in self.net.layers
        ]
        self._selu = []
        for w, _ in self._layers[:-1]:
            n = w.shape[0]
            self._selu.append(
                (
                    np.zeros(n, np.float32),
                    np.full(n, SELU_ALPHA * SELU_SCALE, np.float32),
                    np.full(n, SELU_SCALE, np.float32),
                    np.empty(n, np.float32),
                )
            )
        self._zeros = [zeros for zeros, *_ in self._selu]
        self._version = version

    @torch.no_grad()
    def _torch(self, rows: np.ndarray) -> np.ndarray:
        """Outputs for each row of ``rows`` through torch (any network, any device)."""
        self.net.eval()
        x = torch.from_numpy(rows).to(next(self.net.parameters()).device)
        if self.averages is None:
            return self.net(x).cpu().numpy()
        return torch.func.functional_call(self.net, self.averages.named(self.net), (x,)).cpu().numpy()

    def many(self, rows: np.ndarray) -> np.ndarray:
        """Outputs (logits) of the network for each float32 row of ``rows``, one row each:
        NumPy for a ReLU network on the CPU, torch otherwise.

        >>> net = DASNet(NetConfig(n_inputs=3, hidden_sizes=(4,), n_outputs=2))
        >>> rows = np.arange(6, dtype=np.float32).reshape(2, 3)
        >>> fwd = NumpyForward(net)
        >>> bool(np.allclose(fwd.many(rows), [fwd(r) for r in rows], atol=1e-6))
        True
        """
        if not (self.supported and self.relu):
            return self._torch(rows)
        if self._version != self.net.structure_version:
            self._refresh()
        h = rows
        *hidden, (w_out, b_out) = self._layers
        for w, b in hidden:
            h = h @ w.T
            h += b
            np.maximum(h, 0.0, out=h)
        out = h @ w_out.T
        out += b_out
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Outputs (logits) of the network for one row ``x``."""
        if not self.supported:
            return self._torch(x[None])[0]
        if self._version != self.net.structure_version:
            self._refresh()
        h = x
        *hidden, (w_out, b_out) = self._layers
        if self.selu:
            for (w, b), (zeros, coef, scale, neg) in zip(hidden, self._selu, strict=True):
                a = np.dot(w, h)
                a += b
                np.minimum(a, zeros, out=neg)
                np.expm1(neg, out=neg)
                neg *= coef
                np.maximum(a, zeros, out=a)
                a *= scale
                a += neg
                h = a
        elif self.relu:  # = np.maximum(w @ h + b, 0.0), on a float32 zeros array
            for (w, b), zeros in zip(hidden, self._zeros, strict=True):
                a = np.dot(w, h)
                a += b
                np.maximum(a, zeros, out=a)
                h = a
        else:
            act = self.act
            assert act is not None
            for w, b in hidden:
                h = act(w @ h + b)
        out = np.dot(w_out, h)
        out += b_out
        return out
