"""The whole DAS network in one file: resizable layers, the MLP and the paper's CNN.

A :class:`DASNet` is a stack of hidden layers (dense, or 2-D convolutional followed by dense)
and an output layer. Every layer's parameters are ordinary :class:`torch.nn.Parameter` objects
whose *storage* is replaced when units are added or removed: the ``Parameter`` objects
themselves are kept, so an optimizer keeps pointing at them, and
:func:`edit_parameter` rewrites that optimizer's per-parameter state in the same way as the
parameter (surviving units keep their moments, new units start from zero).

Unit ``j`` of a hidden layer owns row ``j`` of the layer's weight (a filter, for a
convolution) and entry ``j`` of its bias: its *incoming* parameters. Its *outgoing*
parameters are column ``j`` of the next layer's weight, or, where a convolution is flattened
into a dense layer, the ``H*W`` columns ``j*H*W ... (j+1)*H*W - 1`` of that dense layer.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol, TypeAlias, cast

import numpy as np
import torch
from torch import Tensor, nn

from streamdas.activations import ACTIVATIONS

__all__ = [
    "ACTIVATIONS",
    "DASNet",
    "Follower",
    "Layer",
    "NetConfig",
    "ResizeRegistry",
    "edit_parameter",
    "layer_shapes",
    "lecun_normal_",
]


def make_activation(name: str) -> nn.Module:
    """Build a hidden-layer activation by name; reject those with ``f(0) != 0``.

    >>> make_activation("selu")
    SELU()
    >>> make_activation("sigmoid")
    Traceback (most recent call last):
    ...
    ValueError: activation 'sigmoid' has f(0) = 0.5; DAS needs f(0) = 0 ...
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    module = ACTIVATIONS[name].torch()
    f0 = float(module(torch.zeros(1))[0])
    if f0 != 0.0:
        raise ValueError(
            f"activation {name!r} has f(0) = {f0:g}; DAS needs f(0) = 0 so that a unit with "
            "all-zero incoming parameters contributes nothing"
        )
    return module


def lecun_normal_(tensor: Tensor, fan_in: int, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` in place from N(0, 1/fan_in) (LeCun normal), optionally with a generator.

    >>> t = lecun_normal_(torch.empty(1000, 100), fan_in=100, generator=torch.Generator().manual_seed(0))
    >>> round(t.std().item(), 1)
    0.1
    """
    with torch.no_grad():
        return tensor.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)


class StateHolder(Protocol):
    """Anything holding per-parameter state the way an optimizer does (``state[param]`` is a
    dict of tensors), kept aligned by :func:`edit_parameter`: optimizers, and the sizer's
    :class:`streamdas.sizing.RunningAverages`."""

    @property
    def state(self) -> MutableMapping[Any, Any]: ...


class Layer(Protocol):
    """A layer of a :class:`DASNet` (``nn.Linear`` or ``nn.Conv2d``): units along dim 0 of its
    weight, and a bias. Both are parameters (torch annotates them as plain tensors, or not at
    all)."""

    weight: nn.Parameter
    bias: nn.Parameter

    def __call__(self, x: Tensor) -> Tensor: ...


class Layers(Protocol):
    """The ``nn.ModuleList`` of a :class:`DASNet`'s hidden layers, as its :class:`Layer` s."""

    def __getitem__(self, index: int) -> Layer: ...

    def __iter__(self) -> Iterator[Layer]: ...

    def __len__(self) -> int: ...


#: How the state a holder keeps for new slices (grown units, new inputs or outputs) starts: at
#: zero (an optimizer's moments), or at the parameter's new values (an average of it).
NewSlices = Literal["zeros", "values"]
#: What a resize adds: hidden ``"units"`` (rows and next-layer columns), ``"inputs"``, ``"outputs"``.
ResizeKind = Literal["units", "inputs", "outputs"]


@dataclass(frozen=True)
class Follower:
    """A state holder kept aligned with a network's resizes, with how its slices for each
    :data:`ResizeKind` start. A holder decides its own policy with a ``follower()`` method
    (the running averages start new slices at the parameters' values); one without (an
    optimizer) starts them at zero."""

    holder: StateHolder
    units: NewSlices = "zeros"
    inputs: NewSlices = "zeros"
    outputs: NewSlices = "zeros"


class ResizeRegistry:
    """Everything that must follow a network's resizes, registered once. Each holder is read
    from ``owner`` by attribute name at every resize, so a replaced one (another optimizer,
    prediction averages switched on later) needs no new registration; ``None`` is skipped.

    >>> class Owner: pass
    >>> owner = Owner()
    >>> owner.optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    >>> owner.averages = None
    >>> registry = ResizeRegistry(owner, "optimizer", "averages")
    >>> [(type(f.holder).__name__, f.units) for f in registry.followers()]
    [('SGD', 'zeros')]
    """

    def __init__(self, owner: object, *attributes: str) -> None:
        self.owner = owner
        self.attributes = attributes

    def followers(self) -> list[Follower]:
        """The registered holders as they are now, with their policies."""
        return [f for name in self.attributes for f in _followers(getattr(self.owner, name))]


#: What resizing keeps aligned: an optimizer, another state holder, a :class:`Follower`, a
#: :class:`ResizeRegistry`, several (nested), or nothing.
Aligned: TypeAlias = (
    "torch.optim.Optimizer | StateHolder | Follower | ResizeRegistry | Sequence[Aligned] | None"
)


def _followers(aligned: Aligned) -> list[Follower]:
    if aligned is None:
        return []
    if isinstance(aligned, Follower):
        return [aligned]
    if isinstance(aligned, ResizeRegistry):
        return aligned.followers()
    own = getattr(aligned, "follower", None)
    if own is not None:
        return [own()]
    if hasattr(aligned, "state"):
        return [Follower(cast(StateHolder, aligned))]
    return [f for item in aligned for f in _followers(item)]


def _distinct(aligned: Aligned) -> list[Follower]:
    """The followers in ``aligned``, each holder once (the first mention decides its policy)."""
    seen: set[int] = set()
    out = []
    for f in _followers(aligned):
        if id(f.holder) not in seen:
            seen.add(id(f.holder))
            out.append(f)
    return out


class _Version:
    """A network's resize counter, shared by reference with each of its parameters (so that
    :func:`edit_parameter`, which sees only a parameter, can bump the right network's)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


#: Attribute of a parameter holding its network's :class:`_Version` (set by :class:`DASNet`).
_VERSION_ATTR = "_streamdas_version"
_VERSION_LOCK = threading.Lock()


def edit_parameter(
    param: nn.Parameter,
    dim: int,
    keep: Tensor | None = None,
    append: Tensor | None = None,
    optimizer: Aligned = None,
    kind: ResizeKind = "units",
) -> None:
    """Resize ``param`` along ``dim``: keep the slices ``keep`` (all if None), then append ``append``.

    The same ``Parameter`` object is kept (its storage is replaced), so optimizers that hold it
    stay valid. Every optimizer state tensor shaped like the parameter (Adam's moments, SGD's
    momentum, ...) is edited the same way; scalar state such as Adam's step count is left
    alone. ``optimizer`` may also be another :class:`StateHolder` (the sizer's running
    averages), a :class:`Follower`, a :class:`ResizeRegistry` or a sequence of them. Appended
    slices start as the holder's policy for ``kind`` says (zeros for a plain holder, or the
    appended values). The gradient is dropped.

    >>> p = nn.Parameter(torch.arange(6.0).reshape(3, 2))
    >>> edit_parameter(p, 0, keep=torch.tensor([0, 2]), append=torch.zeros(1, 2))
    >>> p.data
    tensor([[0., 1.],
            [4., 5.],
            [0., 0.]])
    """
    # No autograd here: .data, optimizer state and fresh tensors only. This runs a dozen times
    # per sizing cycle, so redundant dispatches (.to() to the same device, .contiguous() on the
    # already contiguous results of index_select and cat) are skipped.
    old_shape = param.shape
    device = param.device
    if keep is not None and keep.device != device:
        keep = keep.to(device)
    if append is not None:
        append = append.detach()
        if append.device != device or append.dtype != param.dtype:
            append = append.to(device=device, dtype=param.dtype)

    def _edit(t: Tensor, fill: Tensor | None) -> Tensor:
        out = t if keep is None else t.index_select(dim, keep)
        if fill is not None:
            out = torch.cat([out, fill], dim=dim)
        return out if out is not t else t.contiguous()

    zeros: Tensor | None = None
    for follower in _distinct(optimizer):
        state = follower.holder.state.get(param)
        if state:
            new = append
            if append is not None and getattr(follower, kind) == "zeros":
                if zeros is None:
                    zeros = torch.zeros_like(append)  # cat copies: shared
                new = zeros
            for key, value in list(state.items()):
                if isinstance(value, Tensor) and value.shape == old_shape:
                    fill = new if new is None or new.dtype == value.dtype else new.to(value.dtype)
                    state[key] = _edit(value, fill)
    param.data = _edit(param.data, append)
    param.grad = None
    version = getattr(param, _VERSION_ATTR, None)
    if version is not None:
        with _VERSION_LOCK:
            version.value += 1


@dataclass(frozen=True)
class NetConfig:
    """Architecture of a :class:`DASNet`: everything needed to rebuild it with its current sizes.

    Parameters
    ----------
    n_inputs
        Input features (MLP) or input channels (CNN).
    hidden_sizes
        Widths of the hidden layers. For a CNN, the first ``len(conv_strides)`` are convolutional
        (filters) and the rest are dense.
    n_outputs
        Output units (classes, or regression targets).
    activation
        Hidden activation name, see :data:`streamdas.activations.ACTIVATIONS`. Must satisfy f(0) = 0.
    input_hw
        ``(height, width)`` of CNN inputs; ``None`` for an MLP.
    conv_strides
        Stride of each convolutional layer (empty for an MLP).
    kernel_size
        Square kernel size of the convolutions (padding keeps "same" size at stride 1).
    dropout
        Dropout rate after each hidden layer (0 for none); one entry per hidden layer.

    >>> NetConfig(n_inputs=4, hidden_sizes=(8, 8), n_outputs=2).is_cnn
    False
    """

    n_inputs: int
    hidden_sizes: tuple[int, ...]
    n_outputs: int
    activation: str = "selu"
    input_hw: tuple[int, int] | None = None
    conv_strides: tuple[int, ...] = ()
    kernel_size: int = 3
    dropout: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.n_inputs < 0 or self.n_outputs < 1:
            raise ValueError("n_inputs must be >= 0 and n_outputs >= 1")
        if not self.hidden_sizes or any(int(h) < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be non-empty and >= 1, got {self.hidden_sizes}")
        if self.dropout and len(self.dropout) != len(self.hidden_sizes):
            raise ValueError("dropout needs one rate per hidden layer")
        if self.conv_strides and self.input_hw is None:
            raise ValueError("a CNN needs input_hw")
        if len(self.conv_strides) >= len(self.hidden_sizes):
            raise ValueError("a CNN needs at least one dense hidden layer after its convolutions")

    @property
    def is_cnn(self) -> bool:
        return bool(self.conv_strides)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, safe for ``torch.load(weights_only=True)``."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        tuples = {"hidden_sizes", "conv_strides", "dropout", "input_hw"}
        kw: dict[str, Any] = {k: (tuple(v) if k in tuples and v is not None else v) for k, v in d.items()}
        return cls(**kw)

    @classmethod
    def paper_cnn(
        cls,
        in_channels: int,
        input_hw: tuple[int, int],
        n_outputs: int,
        hidden_sizes: Sequence[int] = (100, 100, 100, 100, 100),
        activation: str = "selu",
    ) -> NetConfig:
        """The paper's CNN: 4 conv + 1 dense hidden layer, stride 2 on conv2 and conv4,
        which are followed by dropout 0.2 and 0.5.

        >>> NetConfig.paper_cnn(3, (32, 32), 10).conv_strides
        (1, 2, 1, 2)
        """
        if len(hidden_sizes) != 5:
            raise ValueError("the paper's CNN has 5 hidden layers (4 conv + 1 dense)")
        return cls(
            n_inputs=in_channels,
            hidden_sizes=tuple(int(h) for h in hidden_sizes),
            n_outputs=n_outputs,
            activation=activation,
            input_hw=input_hw,
            conv_strides=(1, 2, 1, 2),
            dropout=(0.0, 0.2, 0.0, 0.5, 0.0),
        )


def _conv_out(size: int, kernel: int, stride: int) -> int:
    pad = kernel // 2
    return (size + 2 * pad - kernel) // stride + 1


def layer_shapes(config: NetConfig) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of a :class:`DASNet` of ``config``, by arithmetic (nothing is
    allocated): the network builds its layers from these, and checkpoints are checked
    against them.

    >>> layer_shapes(NetConfig(n_inputs=3, hidden_sizes=(5,), n_outputs=2))
    {'hidden.0.weight': (5, 3), 'hidden.0.bias': (5,), 'output.weight': (2, 5), 'output.bias': (2,)}
    >>> layer_shapes(NetConfig(2, (4, 6), 3, input_hw=(8, 8), conv_strides=(2,)))["hidden.1.weight"]
    (6, 64)
    """
    shapes: dict[str, tuple[int, ...]] = {}
    n_conv, fan, hw, k = len(config.conv_strides), int(config.n_inputs), config.input_hw, config.kernel_size
    for i, width in enumerate(config.hidden_sizes):
        width = int(width)
        if i < n_conv:
            assert hw is not None
            shapes[f"hidden.{i}.weight"] = (width, fan, k, k)
            hw = (_conv_out(hw[0], k, config.conv_strides[i]), _conv_out(hw[1], k, config.conv_strides[i]))
        else:
            in_features = fan * (hw[0] * hw[1] if (i == n_conv and hw is not None) else 1)
            shapes[f"hidden.{i}.weight"] = (width, in_features)
        shapes[f"hidden.{i}.bias"] = (width,)
        fan = width
    shapes["output.weight"] = (int(config.n_outputs), fan)
    shapes["output.bias"] = (int(config.n_outputs),)
    return shapes


def _sync_sizes(layer: Layer) -> None:
    """Set a layer module's size attributes from its weight's shape."""
    out, inp = layer.weight.shape[:2]
    if isinstance(layer, nn.Linear):
        if (layer.out_features, layer.in_features) != (out, inp):
            layer.out_features, layer.in_features = int(out), int(inp)
    elif isinstance(layer, nn.Conv2d) and (layer.out_channels, layer.in_channels) != (out, inp):
        layer.out_channels, layer.in_channels = int(out), int(inp)


class DASNet(nn.Module):
    """A feed-forward network whose hidden layers can gain and lose units.

    Parameters
    ----------
    config
        The architecture (see :class:`NetConfig`).
    generator
        Random generator for the initial weights (LeCun normal); ``None`` uses torch's global one.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> net = DASNet(NetConfig(n_inputs=3, hidden_sizes=(5, 4), n_outputs=2), generator=g)
    >>> net.hidden_sizes
    [5, 4]
    >>> net.add_units(0, 3, generator=g); net.hidden_sizes
    [8, 4]
    >>> net.remove_units(1, torch.tensor([0, 2])); net.hidden_sizes
    [8, 2]
    >>> net(torch.zeros(7, 3)).shape
    torch.Size([7, 2])
    >>> net.config.hidden_sizes
    (8, 2)
    """

    hidden: Layers
    output: Layer

    def __init__(self, config: NetConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self._config = config
        self.act = make_activation(config.activation)
        n_conv = len(config.conv_strides)
        shapes = layer_shapes(config)
        hidden = nn.ModuleList()
        for i in range(len(config.hidden_sizes)):
            out, fan = shapes[f"hidden.{i}.weight"][:2]
            if i < n_conv:
                k = config.kernel_size
                hidden.append(nn.Conv2d(fan, out, k, stride=config.conv_strides[i], padding=k // 2))
            else:
                hidden.append(nn.Linear(fan, out))
        self.hidden = cast(Layers, hidden)
        #: input columns of the first dense layer per unit of the last convolution (H*W)
        self.flat_hw: int = (
            shapes[f"hidden.{n_conv}.weight"][1] // shapes[f"hidden.{n_conv - 1}.weight"][0] if n_conv else 1
        )
        n_outputs, fan = shapes["output.weight"]
        self.output = cast(Layer, nn.Linear(fan, n_outputs))
        rates = config.dropout or (0.0,) * len(config.hidden_sizes)
        self.dropouts = nn.ModuleList(nn.Dropout(r) if r > 0 else nn.Identity() for r in rates)
        self.n_conv = n_conv
        for layer in self.layers:
            self._init_layer(layer, generator)
        self._resizes = _Version()
        self._attach_version()

    def _attach_version(self) -> None:
        for p in self.parameters():
            setattr(p, _VERSION_ATTR, self._resizes)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # copy.deepcopy and pickle rebuild parameters without their attributes: re-attach
        super().__setstate__(state)
        if "_resizes" not in self.__dict__:
            self._resizes = _Version()
        self._attach_version()

    # ------------------------------------------------------------------ structure
    @staticmethod
    def fan_in(layer: Layer) -> int:
        """Number of incoming parameters per unit, bias excluded."""
        return int(math.prod(layer.weight.shape[1:]))

    def _init_layer(self, layer: Layer, generator: torch.Generator | None) -> None:
        lecun_normal_(layer.weight, max(self.fan_in(layer), 1), generator)
        with torch.no_grad():
            layer.bias.zero_()

    @property
    def structure_version(self) -> int:
        """Changes whenever one of *this* network's parameters is resized (any
        :func:`edit_parameter` call, including direct ones): caches of tensor views (NumPy
        prediction and backprop) compare it to know when to rebuild. Resizing another network
        leaves it unchanged."""
        return self._resizes.value

    @property
    def layers(self) -> list[Layer]:
        """Hidden layers then the output layer."""
        return [*self.hidden, self.output]

    @property
    def hidden_sizes(self) -> list[int]:
        return [int(layer.weight.shape[0]) for layer in self.hidden]

    @property
    def n_inputs(self) -> int:
        return int(self.hidden[0].weight.shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.output.weight.shape[0])

    @property
    def config(self) -> NetConfig:
        """The architecture as it is now (current widths, inputs and outputs)."""
        return replace(
            self._config,
            n_inputs=self.n_inputs,
            hidden_sizes=tuple(self.hidden_sizes),
            n_outputs=self.n_outputs,
        )

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def n_bytes(self) -> int:
        """Bytes of tensor storage held by the parameters."""
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def _cols_per_unit(self, index: int) -> int:
        """Input columns of the layer after hidden layer ``index`` that one unit owns."""
        return self.flat_hw if index == self.n_conv - 1 else 1

    def _next_layer(self, index: int) -> Layer:
        return self.layers[index + 1]

    # ------------------------------------------------------------------ resizing
    @torch.no_grad()
    def remove_units(
        self,
        index: int,
        keep: Tensor | np.ndarray | Sequence[int],
        optimizer: Aligned = None,
    ) -> None:
        """Keep only units ``keep`` (indices, any order) of hidden layer ``index``; drop the rest
        together with their outgoing columns in the next layer."""
        # index arithmetic in NumPy (a handful of tiny ops, cheaper than torch's dispatch)
        rows = np.sort(np.asarray(keep.cpu() if isinstance(keep, Tensor) else keep, dtype=np.int64))
        if rows.size < 1:
            raise ValueError("a hidden layer needs at least one unit")
        layer, nxt = self.hidden[index], self._next_layer(index)
        cols = self._cols_per_unit(index)
        rows_t = torch.from_numpy(rows)
        edit_parameter(layer.weight, 0, keep=rows_t, optimizer=optimizer)
        edit_parameter(layer.bias, 0, keep=rows_t, optimizer=optimizer)
        in_keep = rows_t  # columns of the next layer: cols per unit (a conv filter's H*W)
        if cols > 1:
            in_keep = torch.from_numpy((rows[:, None] * cols + np.arange(cols)).reshape(-1))
        edit_parameter(nxt.weight, 1, keep=in_keep, optimizer=optimizer)
        self._sync_shapes(layer, nxt)

    @torch.no_grad()
    def add_units(
        self,
        index: int,
        n_new: int,
        scale: float = 1.0,
        generator: torch.Generator | None = None,
        optimizer: Aligned = None,
        out_scale: float | None = None,
    ) -> None:
        """Append ``n_new`` units to hidden layer ``index``.

        Incoming weights come from the layer's initialiser (LeCun normal) times ``scale`` (the
        paper uses tau), outgoing ones from the next layer's times ``out_scale`` (default:
        ``scale``; 0 leaves the outputs exactly unchanged); biases are zero.
        """
        if n_new <= 0:
            return
        layer, nxt = self.hidden[index], self._next_layer(index)
        w = layer.weight
        # Drawn on the CPU (where the generator lives), moved by edit_parameter.
        rows = lecun_normal_(
            torch.empty((n_new, *w.shape[1:]), dtype=w.dtype),
            max(self.fan_in(layer), 1),
            generator,
        ).mul_(scale)
        edit_parameter(w, 0, append=rows, optimizer=optimizer)
        edit_parameter(layer.bias, 0, append=torch.zeros(n_new, dtype=w.dtype), optimizer=optimizer)
        cols = self._cols_per_unit(index) * n_new
        nw = nxt.weight
        new_fan = max(self.fan_in(nxt) + cols * (int(math.prod(nw.shape[2:])) if nw.dim() > 2 else 1), 1)
        out_cols = lecun_normal_(
            torch.empty((nw.shape[0], cols, *nw.shape[2:]), dtype=nw.dtype),
            new_fan,
            generator,
        ).mul_(scale if out_scale is None else out_scale)
        edit_parameter(nw, 1, append=out_cols, optimizer=optimizer)
        self._sync_shapes(layer, nxt)

    @torch.no_grad()
    def add_inputs(self, n_new: int, optimizer: Aligned = None) -> None:
        """Append ``n_new`` input features (MLP) with zero weights: outputs do not change."""
        if n_new <= 0:
            return
        if self.n_conv:
            raise ValueError("inputs of a CNN are channels; they cannot be added")
        w = self.hidden[0].weight
        zeros = torch.zeros(w.shape[0], n_new, dtype=w.dtype)
        edit_parameter(w, 1, append=zeros, optimizer=optimizer, kind="inputs")
        self._sync_shapes()

    @torch.no_grad()
    def add_outputs(
        self,
        n_new: int,
        generator: torch.Generator | None = None,
        optimizer: Aligned = None,
    ) -> None:
        """Append ``n_new`` output units (e.g. new classes), LeCun-initialised, bias zero."""
        if n_new <= 0:
            return
        w = self.output.weight
        rows = lecun_normal_(torch.empty(n_new, w.shape[1], dtype=w.dtype), max(w.shape[1], 1), generator)
        edit_parameter(w, 0, append=rows, optimizer=optimizer, kind="outputs")
        zeros = torch.zeros(n_new, dtype=w.dtype)
        edit_parameter(self.output.bias, 0, append=zeros, optimizer=optimizer, kind="outputs")
        self._sync_shapes()

    def _sync_shapes(self, *changed: Layer) -> None:
        """Keep the modules' size attributes in line with their tensors (for repr and torch):
        those of ``changed`` (all layers if none given). Every resize ends here: the
        network's version is bumped (also if a parameter lost its link to it)."""
        with _VERSION_LOCK:
            self._resizes.value += 1
        for layer in changed or self.layers:
            _sync_sizes(layer)

    # ------------------------------------------------------------------ forward
    def features(self, x: Tensor) -> Tensor:
        """Output of the last hidden layer (after activation and dropout)."""
        for i, layer in enumerate(self.hidden):
            if i == self.n_conv and self.n_conv:
                x = x.flatten(1)
            x = self.dropouts[i](self.act(layer(x)))
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.features(x))

    def extra_repr(self) -> str:
        return f"hidden_sizes={self.hidden_sizes}, activation={self._config.activation!r}"
