"""A trainer's checkpoint state: what :meth:`~streamdas.DASTrainer.state_dict` writes, and
the checks :meth:`~streamdas.DASTrainer.from_state_dict` makes before anything is built.

A state is plain data and tensors (``torch.load(weights_only=True)`` reads it). Loading checks
every field before using it: the settings against their ranges, the architecture against
:class:`~streamdas.checkpoint.Limits` by arithmetic (:func:`check_architecture`, with the
parameter shapes of :func:`~streamdas.model.layer_shapes`, the function the network builds its
layers from), every tensor for dtype, shape and finiteness, and the optimizer state for exactly
the keys, steps and hyperparameters the trainer's optimizer uses.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor

from streamdas import checkpoint
from streamdas.averaging import ParameterAverages
from streamdas.model import DASNet, NetConfig, layer_shapes, make_activation
from streamdas.sizing import AVERAGE_KEY, SHARED_FIELDS, RunningAverages, SizingConfig, growth_amount
from streamdas.train_config import TrainConfig

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointedTrainer",
    "check_architecture",
    "from_state",
    "load",
    "save",
    "to_state",
]

FORMAT = "streamdas-trainer"
VERSION = 1


class CheckpointedTrainer(Protocol):
    """What a trainer's state holds (a :class:`~streamdas.DASTrainer`)."""

    net: DASNet
    optimizer: torch.optim.Optimizer
    pruning_averages: RunningAverages
    prediction_averages: ParameterAverages | None
    train_config: TrainConfig
    sizing: SizingConfig
    seed: int | None
    generator: torch.Generator
    n_samples: int
    n_steps: int
    n_cycles: int
    n_nonfinite: int
    last_cycle: int
    started: bool
    fine_tune: bool
    n_grown: list[int]
    n_pruned: list[int]
    size_history: list[dict[str, Any]]
    history_limit: int


T = TypeVar("T", bound=CheckpointedTrainer)


def to_state(trainer: CheckpointedTrainer) -> dict[str, Any]:
    """Everything needed to resume ``trainer``: architecture, weights, optimizer, schedule,
    history (:meth:`DASTrainer.state_dict <streamdas.DASTrainer.state_dict>`).

    Plain data and tensors only, loadable with ``torch.load(weights_only=True)``.
    """
    return {
        "format": FORMAT,
        "version": VERSION,
        "net": trainer.net.config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in trainer.net.state_dict().items()},
        "optimizer": trainer.optimizer.state_dict(),
        "averages": {
            name: avg.detach().cpu()
            for name, p in trainer.net.named_parameters()
            if (avg := trainer.pruning_averages.get(p)) is not None
        },
        "polyak": None
        if trainer.prediction_averages is None
        else {
            name: avg.detach().cpu() for name, avg in trainer.prediction_averages.named(trainer.net).items()
        },
        "train": asdict(trainer.train_config),
        "sizing": asdict(trainer.sizing),
        "seed": trainer.seed,
        "rng": trainer.generator.get_state(),
        "counters": {
            "n_samples": trainer.n_samples,
            "n_steps": trainer.n_steps,
            "n_cycles": trainer.n_cycles,
            "n_nonfinite": trainer.n_nonfinite,
            "last_cycle": trainer.last_cycle,
            "started": trainer.started,
            "fine_tune": trainer.fine_tune,
            "n_grown": list(trainer.n_grown),
            "n_pruned": list(trainer.n_pruned),
        },
        "history": [dict(e, sizes=list(e["sizes"])) for e in trainer.size_history],
        "history_limit": trainer.history_limit,
    }


def from_state(
    build: Callable[..., T],
    state: dict[str, Any],
    device: str | torch.device = "cpu",
    limits: checkpoint.Limits | None = None,
) -> T:
    """Check ``state`` and rebuild its trainer with ``build`` (the trainer's class:
    :meth:`DASTrainer.from_state_dict <streamdas.DASTrainer.from_state_dict>`). Raises
    ``ValueError`` if it does not fit.

    Every field is checked before it is used: the settings against their ranges, the
    architecture against ``limits`` (:func:`check_architecture`, by arithmetic: nothing is
    allocated for a network a file cannot afford) and against the shapes of the weights in
    ``state``, every tensor for its dtype, shape and finiteness, the optimizer state for
    exactly the keys, steps and hyperparameters this trainer's optimizer uses. So a state
    that loads steps like the trainer that wrote it.
    """
    limits = limits or checkpoint.DEFAULT_LIMITS
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError("not a streamdas trainer state")
    if state.get("version") != VERSION:
        raise ValueError(f"unsupported trainer state version {state.get('version')!r}")
    try:
        keys = set(state)
        checkpoint.require(
            _STATE_KEYS <= keys <= _STATE_KEYS | {"averages", "polyak"},
            f"trainer state has keys {sorted(map(str, keys))}",
        )
        config = _net_config(state["net"])
        train = TrainConfig(**checkpoint.check_params(state["train"], _TRAIN_RULES, "train"))
        sizing = SizingConfig(**checkpoint.check_params(state["sizing"], _sizing_rules(limits), "sizing"))
        check_architecture(config, sizing, limits)
        _check_shapes(config, state["model"])
        history_limit = _COUNT.check(state["history_limit"], "history_limit")
        checkpoint.require(history_limit > 0, "history_limit is 0")
        seed = checkpoint.estimator_params(limits)["seed"].check(state["seed"], "seed")
        counters = _counters(state["counters"], len(config.hidden_sizes))
        trainer = build(
            config, train=train, sizing=sizing, seed=seed, device=device, history_limit=history_limit
        )
        trainer.net.load_state_dict(state["model"], strict=True)
        legacy_averages = state.get("averages") is None  # then they ride in the optimizer state
        _check_optimizer_state(trainer, state["optimizer"], counters["n_steps"], legacy_averages)
        trainer.optimizer.load_state_dict(state["optimizer"])
        _load_averages(trainer, state.get("averages"))
        polyak = state.get("polyak")  # absent in older checkpoints: start at the weights
        if trainer.prediction_averages is not None and polyak is not None:
            trainer.prediction_averages.load(trainer.net, polyak)
        rng = checkpoint.check_tensor(
            state["rng"], "rng state", dtype=torch.uint8, shape=tuple(trainer.generator.get_state().shape)
        )
        trainer.generator.set_state(rng)
        for key in ("n_samples", "n_steps", "n_cycles", "n_nonfinite", "last_cycle"):
            setattr(trainer, key, counters[key])
        trainer.started, trainer.fine_tune = counters["started"], counters["fine_tune"]
        trainer.n_grown, trainer.n_pruned = list(counters["n_grown"]), list(counters["n_pruned"])
        history = state["history"]
        checkpoint.require(
            isinstance(history, list) and len(history) <= history_limit,
            "history is not a list within its limit",
        )
        trainer.size_history = [_history_entry(e, limits) for e in history]
    except ValueError:
        raise
    except Exception as exc:  # a crafted state can raise anything: one type out
        raise ValueError(f"trainer state does not fit its architecture: {type(exc).__name__}: {exc}") from exc
    return trainer


_STATE_KEYS = frozenset(
    {
        "format",
        "version",
        "net",
        "model",
        "optimizer",
        "train",
        "sizing",
        "seed",
        "rng",
        "counters",
        "history",
        "history_limit",
    }
)
_COUNT = checkpoint.integer(0, 2**62)
_WIDTH = checkpoint.integer(0, 2**31)

#: What a checkpoint may set in :class:`TrainConfig`, with ranges (``f`` and ``regularizer``
#: are checked again by name when the regularizer is built).
_TRAIN_RULES: dict[str, checkpoint.Rule] = {
    "optimizer": checkpoint.choice("adam", "adamw", "sgd"),
    "lr": checkpoint.number(0, 10, open_lo=True),
    "momentum": checkpoint.number(0, 1, open_hi=True),
    "weight_decay": checkpoint.number(0, 1),
    "regularizer": checkpoint.choice("weighted_l1", "l21", "l1", "none"),
    "alpha": checkpoint.number(0, 100),
    "f": checkpoint.text(),
    "loss": checkpoint.choice("cross_entropy", "mse"),
    "numpy_backprop": checkpoint.flag(),
    "sync_free": checkpoint.flag(none=True),
    "cuda_graphs": checkpoint.flag(),
    "average_horizon": checkpoint.integer(0, 10**9),
}

#: An optimizer parameter group's numeric hyperparameters, with ranges; its other entries
#: (flags) must equal those of the optimizer the trainer builds.
_GROUP_RULES: dict[str, checkpoint.Rule] = {
    "lr": checkpoint.number(0, 10, open_lo=True),
    "betas": checkpoint.sequence(checkpoint.number(0, 1, open_hi=True), max_len=2, min_len=2),
    "eps": checkpoint.number(0, 1, open_lo=True),
    "weight_decay": checkpoint.number(0, 1),
    "momentum": checkpoint.number(0, 1, open_hi=True),
    "dampening": checkpoint.number(0, 1),
}

#: The state each optimizer keeps per parameter: exactly these keys.
_OPTIMIZER_STATE_KEYS = {
    "adam": {"step", "exp_avg", "exp_avg_sq"},
    "adamw": {"step", "exp_avg", "exp_avg_sq"},
    "sgd": {"momentum_buffer"},
}


def save(trainer: CheckpointedTrainer, path: str | os.PathLike[str]) -> None:
    """Checkpoint the trainer atomically (see :mod:`streamdas.checkpoint`);
    :meth:`DASTrainer.save <streamdas.DASTrainer.save>`.

    >>> import tempfile, pathlib
    >>> from streamdas import DASTrainer, NetConfig
    >>> t = DASTrainer(NetConfig(n_inputs=2, hidden_sizes=(4,), n_outputs=2), seed=0)
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.ckpt"
    >>> t.save(p)
    >>> DASTrainer.load(p).net.hidden_sizes
    [4]
    """
    checkpoint.save(to_state(trainer), path)


def load(build: Callable[..., T], path: str | os.PathLike[str], device: str | torch.device = "cpu") -> T:
    """Load a trainer saved with :func:`save`, rebuilt with ``build`` (the trainer's class:
    :meth:`DASTrainer.load <streamdas.DASTrainer.load>`); raises
    :class:`~streamdas.CheckpointError`."""
    payload = checkpoint.load(path)
    return checkpoint.guarded(lambda: from_state(build, payload, device), str(path))


def _sizing_rules(limits: checkpoint.Limits) -> dict[str, checkpoint.Rule]:
    """What a checkpoint may set in :class:`SizingConfig` (widths within ``limits``)."""
    params = checkpoint.estimator_params(limits)
    rules = {k: params[k] for k in SHARED_FIELDS}
    rules["every"] = params["grow_every"]
    return rules


def _net_config(net: Any) -> NetConfig:
    checkpoint.require(isinstance(net, dict), "net is not a dict")
    rules = {
        "n_inputs": checkpoint.integer(0, 2**31),
        "hidden_sizes": checkpoint.sequence(checkpoint.integer(1, 2**31), max_len=64, min_len=1),
        "n_outputs": checkpoint.integer(1, 2**31),
        "activation": checkpoint.text(r"[a-z_]{1,32}"),
        "input_hw": checkpoint.Rule(
            (list, tuple), items=checkpoint.integer(1, 4096), min_len=2, max_len=2, none=True
        ),
        "conv_strides": checkpoint.sequence(checkpoint.integer(1, 16), max_len=63),
        "kernel_size": checkpoint.integer(1, 31),
        "dropout": checkpoint.sequence(checkpoint.number(0, 1, open_hi=True), max_len=64),
    }
    return NetConfig.from_dict(checkpoint.check_params(net, rules, "net"))


def _n_parameters(config: NetConfig) -> int:
    return sum(math.prod(shape) for shape in layer_shapes(config).values())


def check_architecture(
    config: NetConfig, sizing: SizingConfig, limits: checkpoint.Limits | None = None
) -> None:
    """``ValueError`` unless a network of ``config`` fits ``limits``: every hidden layer at
    most :attr:`~streamdas.checkpoint.Limits.max_units` wide, and at most
    :attr:`~streamdas.checkpoint.Limits.max_parameters` parameters once every layer has grown
    once more by ``sizing`` (the growth before the first step, or at the next cycle). By
    arithmetic: nothing is allocated.

    >>> check_architecture(NetConfig(4, (64, 64), 2), SizingConfig())
    >>> check_architecture(NetConfig(4, (4000, 4000), 2), SizingConfig())
    Traceback (most recent call last):
    ...
    ValueError: a network 4 -> [4000, 4000] -> 2 grown once to [4800, 4800] has 23,078,402 parameters, ...
    """
    limits = limits or checkpoint.DEFAULT_LIMITS
    widths = [int(h) for h in config.hidden_sizes]
    checkpoint.require(
        all(w <= limits.max_units for w in widths),
        f"hidden layers {widths} exceed the {limits.max_units} units allowed",
    )
    grown = [w + growth_amount(w, sizing) for w in widths] if sizing.grow else widths
    n = _n_parameters(replace(config, hidden_sizes=tuple(grown)))
    checkpoint.require(
        n <= limits.max_parameters,
        f"a network {config.n_inputs} -> {widths} -> {config.n_outputs} grown once to "
        f"{grown} has {n:,} parameters, more than the {limits.max_parameters:,} allowed",
    )
    make_activation(config.activation)  # refuses unknown names and f(0) != 0


def _counters(c: Any, n_hidden: int) -> dict[str, Any]:
    rules: dict[str, checkpoint.Rule] = {
        k: _COUNT for k in ("n_samples", "n_steps", "n_cycles", "n_nonfinite", "last_cycle")
    }
    rules |= {
        "started": checkpoint.flag(),
        "fine_tune": checkpoint.flag(),
        "n_grown": checkpoint.sequence(_COUNT, max_len=n_hidden, min_len=n_hidden),
        "n_pruned": checkpoint.sequence(_COUNT, max_len=n_hidden, min_len=n_hidden),
    }
    out = checkpoint.check_params(c, rules, "counters")
    checkpoint.require(set(out) == set(rules), f"counters have keys {sorted(out)}, not {sorted(rules)}")
    checkpoint.require(out["last_cycle"] <= out["n_samples"], "the last cycle is after the last sample")
    return out


def _load_averages(trainer: CheckpointedTrainer, averages: Any) -> None:
    """The sizer's running averages: from ``state["averages"]`` (parameter name -> tensor), or,
    in checkpoints written while they rode in the optimizer's state, moved out of it."""
    params = dict(trainer.net.named_parameters())
    if averages is None:  # older checkpoints: under AVERAGE_KEY in the optimizer's state
        for p in params.values():
            entry = trainer.optimizer.state.get(p)
            if entry and AVERAGE_KEY in entry:
                trainer.pruning_averages.state[p] = {AVERAGE_KEY: entry.pop(AVERAGE_KEY)}
        return
    checkpoint.require(isinstance(averages, dict), "averages is not a dict")
    for name, value in averages.items():
        param = params.get(name)
        if param is None:
            raise ValueError(f"average of unknown parameter {name!r}")
        try:
            checkpoint.check_tensor(value, f"average of {name!r}", dtype=param.dtype, shape=param.shape)
        except ValueError as exc:
            raise ValueError(f"average of {name!r} does not fit: {exc}") from None
        trainer.pruning_averages.state[param] = {AVERAGE_KEY: value.to(param.device).clone()}


def _check_group(trainer: CheckpointedTrainer, group: Any, n_params: int) -> None:
    """The one parameter group: its parameter ids, hyperparameters in range, flags as built."""
    reference = trainer.optimizer.state_dict()["param_groups"][0]
    checkpoint.require(isinstance(group, dict), "optimizer parameter group is not a dict")
    checkpoint.require(
        {"params", "lr"} <= set(group) <= set(reference),
        f"optimizer parameter group has keys {sorted(map(str, group))}, "
        f"not those of {type(trainer.optimizer).__name__}: {sorted(reference)}",
    )
    checkpoint.require(
        group["params"] == list(range(n_params)),
        "optimizer parameter group does not list the network's parameters",
    )
    for key, value in group.items():
        if key == "params":
            continue
        rule = _GROUP_RULES.get(key)
        if rule is not None:
            rule.check(value, f"optimizer {key}")
        else:
            checkpoint.require(
                type(value) is type(reference[key]) and value == reference[key],
                f"optimizer {key} is {value!r}, not {reference[key]!r}",
            )


def _check_optimizer_state(
    trainer: CheckpointedTrainer, opt_state: Any, n_steps: int, legacy_averages: bool = False
) -> None:
    """The optimizer state must be the one this trainer's optimizer keeps: one parameter group
    with the network's parameters and hyperparameters in range, and per parameter exactly the
    keys it uses (Adam: ``step``, ``exp_avg``, ``exp_avg_sq``; SGD: ``momentum_buffer``), each
    tensor of its parameter's shape and dtype and finite, ``exp_avg_sq`` not negative, steps
    whole numbers from 0 to the trainer's step count. torch checks none of it when loading,
    and a state that does not fit fails at the first step."""
    params = list(trainer.net.parameters())
    checkpoint.require(
        isinstance(opt_state, dict) and set(opt_state) == {"state", "param_groups"},
        "optimizer state is not {state, param_groups}",
    )
    groups, per_param = opt_state["param_groups"], opt_state["state"]
    checkpoint.require(
        isinstance(groups, list) and len(groups) == 1, "optimizer state does not have one parameter group"
    )
    _check_group(trainer, groups[0], len(params))
    checkpoint.require(isinstance(per_param, dict), "optimizer per-parameter state is not a dict")
    expected = _OPTIMIZER_STATE_KEYS[trainer.train_config.optimizer]
    for pid, pstate in per_param.items():
        checkpoint.require(
            type(pid) is int and 0 <= pid < len(params), f"optimizer state for unknown parameter {pid!r}"
        )
        p = params[pid]
        checkpoint.require(isinstance(pstate, dict), f"optimizer state {pid} is not a dict")
        keys = set(pstate) - {AVERAGE_KEY} if legacy_averages else set(pstate)
        checkpoint.require(
            keys == expected,
            f"optimizer state {pid} has keys {sorted(map(str, pstate))}, not {sorted(expected)}",
        )
        for key, value in pstate.items():
            what = f"optimizer state {key!r} of parameter {pid}"
            if key == "step":
                step = checkpoint.check_tensor(value, what, dtype=torch.float32, shape=())
                s = float(step)
                checkpoint.require(
                    s == int(s) and 0 <= s <= n_steps, f"{what} is {s}, not a step count from 0 to {n_steps}"
                )
            elif key == "momentum_buffer" and value is None:
                continue
            elif key == AVERAGE_KEY:
                checkpoint.check_tensor(value, f"average of parameter {pid}", dtype=p.dtype, shape=p.shape)
            else:
                checkpoint.check_tensor(
                    value, what, dtype=p.dtype, shape=p.shape, nonnegative=key == "exp_avg_sq"
                )


def _check_shapes(config: NetConfig, model_state: Any) -> None:
    """The parameter shapes a network of ``config`` would have must be exactly those of the
    tensors in ``model_state`` (float32, finite), checked before building it: a file cannot
    make us allocate a network larger than the weights it holds."""
    if not isinstance(model_state, dict) or not all(isinstance(v, Tensor) for v in model_state.values()):
        raise ValueError("model weights are not a dict of tensors")
    expected = layer_shapes(config)
    found = {k: tuple(v.shape) for k, v in model_state.items()}
    if expected != found:
        raise ValueError(f"the weights do not fit architecture {config.hidden_sizes}")
    for name, value in model_state.items():
        checkpoint.check_tensor(value, f"weight {name!r}", dtype=torch.float32)


def _history_entry(entry: Any, limits: checkpoint.Limits) -> dict[str, Any]:
    if not (isinstance(entry, dict) and set(entry) == {"n_samples", "event", "sizes"}):
        raise ValueError("a size-history entry is not {n_samples, event, sizes}")
    return {
        "n_samples": _COUNT.check(entry["n_samples"], "history n_samples"),
        "event": checkpoint.choice("init", "grow", "prune").check(entry["event"], "history event"),
        "sizes": list(checkpoint.sequence(_WIDTH, max_len=64).check(entry["sizes"], "history sizes")),
    }
