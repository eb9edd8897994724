"""Checkpoints: atomic writes, safe loads, clear errors.

A checkpoint is a ``torch.save`` of plain data and tensors. It is written to a temporary file in
the target's folder, flushed and fsynced, then renamed over the target, so a reader sees the old
file or the new one and never a torn one. It is read with ``torch.load(weights_only=True)``,
which never runs code from the file. A truncated, corrupt or incompatible file raises
:class:`CheckpointError`; the object being loaded into is never half-changed, because loading
builds a new object and only returns it once everything fitted.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "load", "load_estimator", "save", "save_estimator"]


class CheckpointError(Exception):
    """A checkpoint could not be read or does not fit what it should restore."""


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


ESTIMATOR_FORMAT = "streamdas-estimator"


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
    payload = {
        "format": ESTIMATOR_FORMAT,
        "class": type(estimator).__name__,
        "estimator": estimator._state(),
        "extra": extra or {},
    }
    return save(payload, path)


def load_estimator(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """Load what :func:`save_estimator` wrote: ``(estimator, extra)``."""
    from streamdas import estimators

    payload = load(path)
    if payload.get("format") != ESTIMATOR_FORMAT:
        raise CheckpointError(f"{path} is not a streamdas estimator checkpoint")
    cls = {"DASClassifier": estimators.DASClassifier, "DASRegressor": estimators.DASRegressor}.get(
        str(payload.get("class"))
    )
    if cls is None:
        raise CheckpointError(f"{path}: unknown estimator class {payload.get('class')!r}")
    try:
        est = cls._from_state(payload["estimator"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint does not fit {cls.__name__}: {exc}") from exc
    return est, dict(payload.get("extra") or {})
