"""Checkpoints: the one home of serialization (plain data in, plain data out, atomic files).

A checkpoint is a ``torch.save`` of plain data and tensors. It is written to a temporary file in
the target's folder, flushed and fsynced, then renamed over the target, so a reader sees the old
file or the new one and never a torn one. It is read with ``torch.load(weights_only=True)``,
which never runs code from the file.

Nothing in a file is imported, looked up or called by name: the estimator classes are a fixed
table (:data:`ESTIMATORS`, filled by :func:`checkpointable`), and so are the drift detectors
(:data:`DRIFT_DETECTORS`), whose parameters must be plain values. **Every** failure to load --
a missing, truncated, corrupt, incompatible or hostile file -- raises :class:`CheckpointError`
and nothing else; the object being loaded into is never half-changed, because loading builds a
new object and only returns it once everything fitted.

The public surface: :func:`save` / :func:`load` (files), :func:`save_estimator` /
:func:`load_estimator` (an estimator with its architecture, weights and optimizer),
:func:`estimator_to_state` / :func:`estimator_from_state` (an estimator to plain data and back,
no file), :func:`detector_to_state` / :func:`detector_from_state`, and the validators
(:func:`plain`, :func:`require`) the estimators and the trainer use to read their own states.
This module imports nothing else from streamdas, so it sits below every module that uses it.
"""

from __future__ import annotations

import inspect
import io
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from river import drift

__all__ = [
    "DRIFT_DETECTORS",
    "ESTIMATORS",
    "ESTIMATOR_FORMAT",
    "CheckpointError",
    "checkpointable",
    "detector_from_state",
    "detector_to_state",
    "estimator_from_state",
    "estimator_to_state",
    "guarded",
    "load",
    "load_estimator",
    "plain",
    "require",
    "save",
    "save_estimator",
]


class CheckpointError(Exception):
    """A checkpoint could not be read or does not fit what it should restore.

    The only exception :func:`load`, :func:`load_estimator` and :func:`estimator_from_state`
    raise for anything wrong with the file or the data in it.
    """


def save(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file, fsync, rename).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = save({"answer": 42}, d / "x.ckpt")
    >>> load(d / "x.ckpt")
    {'answer': 42}
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; raise :class:`CheckpointError` on any fault.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "bad.ckpt"
    >>> _ = p.write_bytes(b"not a checkpoint")
    >>> load(p)
    Traceback (most recent call last):
    ...
    streamdas.checkpoint.CheckpointError: cannot read checkpoint .../bad.ckpt: ...
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} holds {type(payload).__name__}, not a dict")
    return payload


# ---------------------------------------------------------------------- validation helpers
_SCALARS = (str, int, float, bool, type(None))


def require(condition: Any, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` (for reading states field by field).

    >>> require(1 + 1 == 2, "arithmetic")
    >>> require(False, "bad state")
    Traceback (most recent call last):
    ...
    ValueError: bad state
    """
    if not condition:
        raise ValueError(message)


def plain(value: Any, what: str, max_len: int = 1_000_000) -> Any:
    """``value`` if it is a plain value: ``str``, ``int``, finite ``float``, ``bool``, ``None``,
    or a list or tuple of such scalars (at most ``max_len`` long); else ``ValueError``.

    >>> plain([1, 2.5, "a"], "sizes")
    [1, 2.5, 'a']
    >>> plain(float("inf"), "lr")
    Traceback (most recent call last):
    ...
    ValueError: lr is not a plain value: inf
    >>> plain({"a": 1}, "x")
    Traceback (most recent call last):
    ...
    ValueError: x is not a plain value: {'a': 1}
    """
    if isinstance(value, (list, tuple)):
        require(len(value) <= max_len, f"{what} is too long ({len(value)} > {max_len})")
        for v in value:
            plain(v, what)
        return value
    if type(value) not in _SCALARS or (type(value) is float and not math.isfinite(value)):
        raise ValueError(f"{what} is not a plain value: {value!r}")
    return value


# ---------------------------------------------------------------------- drift detectors
#: The drift detectors a checkpoint may name: River's real-valued detectors, by a fixed table.
#: Nothing else is ever constructed from a file (no module import, no attribute walk).
DRIFT_DETECTORS: dict[str, type] = {
    "ADWIN": drift.ADWIN,
    "KSWIN": drift.KSWIN,
    "PageHinkley": drift.PageHinkley,
    "NoDrift": drift.NoDrift,
    "DummyDriftDetector": drift.DummyDriftDetector,
}


def detector_to_state(detector: Any) -> dict[str, Any] | None:
    """A drift detector's class name and parameters as plain data (``None`` for ``None``).

    Raises ``ValueError`` for a detector outside :data:`DRIFT_DETECTORS` or with parameters
    that are not plain values, so a model that could not be restored is never saved.

    >>> from river import drift
    >>> detector_to_state(drift.ADWIN(delta=0.01))["params"]["delta"]
    0.01
    """
    if detector is None:
        return None
    name = next((n for n, c in DRIFT_DETECTORS.items() if type(detector) is c), None)
    if name is None:
        raise ValueError(f"drift detector {type(detector).__name__} cannot be checkpointed: not on "
                         f"the allow-list {sorted(DRIFT_DETECTORS)}")
    params = {}
    for key, value in detector._get_params().items():
        if hasattr(value, "maxlen"):  # KSWIN's initial window (a deque): its values
            value = list(value)
        params[key] = plain(value, f"drift detector parameter {key!r}")
    return {"class": name, "params": params}


def detector_from_state(state: Any) -> Any:
    """Rebuild what :func:`detector_to_state` wrote; ``ValueError`` for anything else.

    >>> type(detector_from_state({"class": "PageHinkley", "params": {"threshold": 20.0}})).__name__
    'PageHinkley'
    >>> detector_from_state({"module": "os", "class": "system", "params": {"command": "ls"}})
    Traceback (most recent call last):
    ...
    ValueError: drift detector 'system' is not on the allow-list ...
    """
    if state is None:
        return None
    require(isinstance(state, dict), "drift detector entry is not a dict")
    require(set(state) <= {"module", "class", "params"}, f"drift detector entry has keys {sorted(state)}")
    name = state.get("class")
    cls = DRIFT_DETECTORS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"drift detector {name!r} is not on the allow-list {sorted(DRIFT_DETECTORS)}")
    if "module" in state:  # files before the allow-list also named the module: it must agree
        require(state["module"] == cls.__module__, f"drift detector module {state['module']!r} "
                f"is not {cls.__module__!r}")
    params = state.get("params", {})
    require(isinstance(params, dict), "drift detector parameters are not a dict")
    allowed = set(inspect.signature(cls).parameters)
    for key, value in params.items():
        require(key in allowed, f"{name} has no parameter {key!r}")
        plain(value, f"drift detector parameter {key!r}", max_len=100_000)
    return cls(**params)


# ---------------------------------------------------------------------- estimators
ESTIMATOR_FORMAT = "streamdas-estimator"

#: The estimator classes a checkpoint may name, by class name (filled by :func:`checkpointable`).
ESTIMATORS: dict[str, type] = {}

_T = TypeVar("_T", bound=type)


def checkpointable(cls: _T) -> _T:
    """Class decorator: put ``cls`` on the table of estimators a checkpoint may name.

    The class provides ``to_state() -> dict`` (plain data and tensors) and a classmethod
    ``from_state(state)`` that validates everything it reads.
    """
    name = cls.__name__
    if ESTIMATORS.get(name, cls) is not cls:
        raise ValueError(f"another estimator class is already registered as {name!r}")
    ESTIMATORS[name] = cls
    return cls


def estimator_to_state(estimator: Any) -> dict[str, Any]:
    """An estimator as plain data and tensors (``torch.load(weights_only=True)``-safe)."""
    name = type(estimator).__name__
    if ESTIMATORS.get(name) is not type(estimator):
        raise ValueError(f"{name} is not a checkpointable estimator")
    return {"format": ESTIMATOR_FORMAT, "class": name, "estimator": estimator.to_state()}


def estimator_from_state(payload: Any, where: str = "checkpoint") -> Any:
    """Rebuild an estimator from :func:`estimator_to_state`'s data; :class:`CheckpointError`
    (naming ``where``) for anything that does not fit."""
    if not isinstance(payload, dict) or payload.get("format") != ESTIMATOR_FORMAT:
        raise CheckpointError(f"{where} is not a streamdas estimator checkpoint")
    name = payload.get("class")
    cls = ESTIMATORS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise CheckpointError(f"{where}: unknown estimator class {name!r}")
    try:
        return cls.from_state(payload["estimator"])
    except Exception as exc:  # anything a crafted state can raise: one documented type
        raise CheckpointError(f"{where}: checkpoint does not fit {name}: "
                              f"{type(exc).__name__}: {exc}") from exc


def save_estimator(estimator: Any, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
    """Save a :class:`~streamdas.DASClassifier` or :class:`~streamdas.DASRegressor` with its
    architecture, weights, optimizer and sizer state, and optional ``extra`` plain data
    (e.g. Kafka offsets) in the same atomic write.

    >>> import tempfile, pathlib
    >>> from streamdas import DASClassifier
    >>> model = DASClassifier(seed=1)
    >>> model.learn_one({"a": 1.0}, True)
    >>> p = save_estimator(model, pathlib.Path(tempfile.mkdtemp()) / "m.ckpt", extra={"offsets": {"0": 7}})
    >>> clone, extra = load_estimator(p)
    >>> extra, clone.predict_proba_one({"a": 1.0}) == model.predict_proba_one({"a": 1.0})
    ({'offsets': {'0': 7}}, True)
    """
    payload = estimator_to_state(estimator)
    payload["extra"] = extra or {}
    return save(payload, path)


def load_estimator(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """Load what :func:`save_estimator` wrote: ``(estimator, extra)``.

    Raises :class:`CheckpointError` for every kind of damage, and only that.
    """
    payload = load(path)
    extra = payload.get("extra", {})
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: extra data is {type(extra).__name__}, not a dict")
    return estimator_from_state(payload, where=str(path)), dict(extra)


def guarded(fn: Callable[..., Any], where: str) -> Any:
    """Call ``fn()``; turn any exception but ``KeyboardInterrupt``/``SystemExit`` into a
    :class:`CheckpointError` naming ``where`` (for loaders outside this module)."""
    try:
        return fn()
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{where}: {type(exc).__name__}: {exc}") from exc
