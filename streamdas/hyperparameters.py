"""Hyperparameters declared once, in the estimator's ``__init__`` signature.

As River's ``base.Base._get_params`` does, the names are read back from the signature:
:func:`param_names` lists them, :func:`config_args` hands each to the configuration dataclass
field of the same name, and :class:`Live` makes one safe to change while learning. Adding a
hyperparameter is then one line in the signature and its entry in the docstring.

>>> from streamdas.sizing import SizingConfig
>>> class Toy:
...     def __init__(self, tau: float = 0.5, grow_every: int = 10, seed: int | None = None) -> None:
...         self.tau, self.grow_every, self.seed = tau, grow_every, seed
>>> param_names(Toy)
('tau', 'grow_every', 'seed')
>>> config_args(SizingConfig, Toy(), renames={"every": "grow_every"})
{'tau': 0.5, 'every': 10}
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["Live", "arguments", "check_bound", "config_args", "param_names"]


_NAMES: dict[type, tuple[str, ...]] = {}


def param_names(cls: type) -> tuple[str, ...]:
    """The keyword parameters of ``cls``'s constructor, in signature order (``*args`` and
    ``**kwargs`` left out); read once per class."""
    names = _NAMES.get(cls)
    if names is None:
        parameters = inspect.signature(cls).parameters.values()
        names = tuple(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        _NAMES[cls] = names
    return names


def arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of an ``__init__`` out of its ``locals()`` (``self`` and the ``__class__``
    cell that ``super()`` adds left out), to hand to the base class."""
    return {k: v for k, v in values.items() if k != "self" and not k.startswith("__")}


def config_args(config: type, owner: Any, renames: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The fields of the dataclass ``config`` that ``owner`` has as hyperparameters, with their
    values: each field takes the parameter of its name (``renames``: field to parameter name
    where they differ); fields without one keep their defaults."""
    names = set(param_names(type(owner)))
    renames = renames or {}
    out = {}
    for f in dataclasses.fields(config):
        name = renames.get(f.name, f.name)
        if name in names:
            out[f.name] = getattr(owner, name)
    return out


def check_bound(name: str, value: Any, none: bool = True) -> None:
    """``ValueError`` unless ``value`` is a positive ``int`` (or ``None``, where allowed).

    >>> check_bound("max_classes", 0)
    Traceback (most recent call last):
    ...
    ValueError: max_classes must be a positive integer or None, got 0
    """
    if value is None and none:
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if none else ''}, got {value!r}")


class Live:
    """A hyperparameter that is safe to change while learning (River's ``mutate``): setting it
    validates the value and hands it to the trainer at once, so the next step uses it."""

    def __init__(self, target: str) -> None:
        self.target = target  # the keyword of DASTrainer.set_hyperparameters

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.slot = name, "_" + name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else obj.__dict__[self.slot]

    def __set__(self, obj: Any, value: Any) -> None:
        ready = "_trainer" in obj.__dict__  # past __init__, which validates everything itself
        old = obj.__dict__.get(self.slot)
        obj.__dict__[self.slot] = value
        if not ready:
            return
        try:
            obj._train_config()
            obj._sizing_config()
        except (TypeError, ValueError):
            obj.__dict__[self.slot] = old
            raise
        if obj._trainer is not None:
            obj._trainer.set_hyperparameters(**{self.target: value})
