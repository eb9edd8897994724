"""Per-partition checkpoints: one model plus the next offset of its partition, in one file.

Layout: ``<dir>/<topic>/<partition>/<next_offset:020d>.ckpt``. Each file is written
atomically by :func:`streamdas.checkpoint.save_estimator` (temp file, fsync, rename) and holds
the estimator *and* ``extra["offsets"]`` -- so the model state and the position it corresponds
to can never disagree. Loading takes the file with the highest offset that reads cleanly (a
corrupt newest file falls back to the previous one); older files beyond ``keep`` are pruned.
Offsets in file names also make writes monotonic across instances: a stale writer can only add
an older file, never hide a newer one.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumers.model import PartitionState

__all__ = ["CheckpointStore", "Loaded"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{20})\.ckpt$")
_PICKLE_FORMAT = "streamdas-consumer-pickle"


@dataclass
class Loaded:
    """A checkpoint read back: the state and the file it came from."""

    state: PartitionState
    path: Path
    extra: dict[str, Any]


def _safe(topic: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", topic)


def _save(estimator: Any, path: Path, extra: dict[str, Any]) -> None:
    from streamdas import checkpoint

    if hasattr(estimator, "to_state"):  # a streamdas estimator: weights-only format
        checkpoint.save_estimator(estimator, path, extra=extra)
        return
    # Other River estimators (the "linear" baseline) are pickled; only load from a trusted dir.
    payload = {"format": _PICKLE_FORMAT, "pickle": pickle.dumps(estimator), "extra": extra}
    checkpoint.save(payload, path)


def _load(path: Path) -> tuple[Any, dict[str, Any]]:
    from streamdas import checkpoint

    payload = checkpoint.load(path)
    if payload.get("format") == _PICKLE_FORMAT:
        try:
            return pickle.loads(payload["pickle"]), dict(payload.get("extra") or {})
        except Exception as exc:
            raise checkpoint.CheckpointError(f"{path}: cannot unpickle: {exc}") from exc
    return checkpoint.load_estimator(path)


class CheckpointStore:
    """Save and load :class:`~consumers.model.PartitionState` per topic-partition.

    Parameters
    ----------
    root
        Checkpoint folder; instances of one consumer group must share it (same host, or a
        shared volume) for model state to follow partitions across rebalances.
    keep
        How many checkpoint files to keep per partition.

    Examples
    --------
    >>> import tempfile
    >>> from consumers.model import ModelSpec, make_estimator
    >>> store = CheckpointStore(tempfile.mkdtemp())
    >>> state = PartitionState(make_estimator(ModelSpec(kind="linear")), ["a"], next_offset=12)
    >>> _ = store.save("in", 0, state)
    >>> store.latest_offset("in", 0), store.load("in", 0).state.next_offset
    (12, 12)
    >>> store.load("in", 1) is None
    True
    """

    def __init__(self, root: str | os.PathLike[str], keep: int = 2) -> None:
        self.root = Path(root)
        self.keep = max(1, int(keep))

    def folder(self, topic: str, partition: int) -> Path:
        """The folder holding ``topic``/``partition``'s checkpoints."""
        return self.root / _safe(topic) / str(int(partition))

    def _files(self, topic: str, partition: int) -> list[tuple[int, Path]]:
        folder = self.folder(topic, partition)
        if not folder.is_dir():
            return []
        found = []
        for entry in folder.iterdir():
            match = _NAME.match(entry.name)
            if match:
                found.append((int(match.group(1)), entry))
        return sorted(found, reverse=True)

    def latest_offset(self, topic: str, partition: int) -> int | None:
        """The highest checkpointed next-offset of a partition (``None``: no checkpoint)."""
        files = self._files(topic, partition)
        return files[0][0] if files else None

    def save(self, topic: str, partition: int, state: PartitionState) -> Path:
        """Write ``state`` (which must have a ``next_offset``) and prune old files."""
        if state.next_offset is None:
            raise ValueError("cannot checkpoint a partition state without next_offset")
        offset = int(state.next_offset)
        path = self.folder(topic, partition) / f"{offset:020d}.ckpt"
        extra = {
            "offsets": {f"{topic}:{int(partition)}": offset},
            "topic": topic,
            "partition": int(partition),
            "features": list(state.features) if state.features is not None else None,
            "n_records": int(state.n_records),
            "saved_at": time.time(),
        }
        _save(state.estimator, path, extra)
        state.dirty = 0
        for _, old in self._files(topic, partition)[self.keep :]:
            old.unlink(missing_ok=True)
        return path

    def load(self, topic: str, partition: int) -> Loaded | None:
        """Load the newest readable checkpoint of a partition (``None`` when there is none)."""
        from streamdas.checkpoint import CheckpointError

        for offset, path in self._files(topic, partition):
            try:
                estimator, extra = _load(path)
            except CheckpointError as exc:
                log.error("skipping unreadable checkpoint %s: %s", path, exc)
                continue
            features = extra.get("features")
            state = PartitionState(
                estimator=estimator,
                features=list(features) if features is not None else None,
                next_offset=offset,
                n_records=int(extra.get("n_records", 0)),
            )
            return Loaded(state=state, path=path, extra=extra)
        return None
