"""Per-partition checkpoints: one model plus the next offset of its partition, in one file.

Layout: ``<dir>/<topic>/<partition>/<next_offset:020d>.ckpt``. Each file is written
atomically by :func:`streamdas.checkpoint.save_estimator` (temp file, fsync, rename) and holds
the estimator *and* ``extra["offsets"]`` -- so the model state and the position it corresponds
to can never disagree. Loading takes the file with the highest offset that reads cleanly and
works (a corrupt newest file falls back to the previous one); older files beyond ``keep`` are
pruned. Temporary files of a save killed midway are removed at start and before each save, once
``stale_after_s`` old (a younger one may be another replica's save in progress).
Offsets in file names also make writes monotonic across instances: a stale writer can only add
an older file, never hide a newer one.

Nothing is unpickled: the folder may be shared by replicas (a read-write volume), so a file in it
is data, never code. DAS models use :func:`streamdas.checkpoint.save_estimator`; the ``linear``
baselines (River's logistic and linear regression) are stored as plain data (class from a fixed
table, plain parameters, weights as a ``{feature: float}`` dict) by :func:`linear_to_state`. A
store built with ``kind`` refuses a checkpoint of another model kind. Every unreadable file is a
:class:`~streamdas.CheckpointError`: :meth:`CheckpointStore.load` then falls back to the next
older file, then to ``None`` (a fresh model), logging and reporting each fallback.

A file that reads is not yet a model that works: after validating it (see
:mod:`streamdas.checkpoint`), the store predicts and takes one learning step on a copy of the
model (:func:`streamdas.checkpoint.self_check`); any failure there -- a native panic, a
non-finite output -- makes the file unreadable too.

Configured model parameters (``--model-param``) and a checkpoint's: the checkpoint's win, since
they shape the state it holds (architecture, optimizer, limits), except the hyperparameters a
DAS estimator may change while learning (its ``_mutable_attributes``: ``alpha``, ``lr``, ``tau``,
``grow_every``), where the configured value is applied. Every difference is logged with both
values and which one is used.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from river import linear_model, optim, utils

from consumers.model import PartitionState
from streamdas import checkpoint
from streamdas.checkpoint import CheckpointError
from streamdas.trainer import check_architecture

__all__ = ["CheckpointStore", "Loaded", "linear_from_state", "linear_to_state"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{20})\.ckpt$")
_LINEAR_FORMAT = "streamdas-linear-baseline"
_LEGACY_PICKLE_FORMAT = "streamdas-consumer-pickle"  # older files: refused, never unpickled

#: A River linear baseline (what :func:`linear_to_state` stores).
LinearModel = linear_model.LogisticRegression | linear_model.LinearRegression

#: The baseline classes a checkpoint may name (a fixed table: nothing is looked up by name).
LINEAR_MODELS: dict[str, type[LinearModel]] = {
    "LogisticRegression": linear_model.LogisticRegression,
    "LinearRegression": linear_model.LinearRegression,
}


@dataclass
class Loaded:
    """A checkpoint read back: the state and the file it came from."""

    state: PartitionState
    path: Path
    extra: dict[str, Any]


def _safe(topic: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", topic)


def _float_dict(d: Any, what: str) -> dict[str, float]:
    checkpoint.require(isinstance(d, dict), f"{what} is not a dict")
    out = {}
    for k, v in d.items():
        checkpoint.require(
            type(k) is str and type(v) in (int, float) and math.isfinite(v),
            f"{what} holds {k!r}: {v!r}, not a str name and a finite number",
        )
        out[k] = float(v)
    return out


def linear_to_state(estimator: Any) -> dict[str, Any]:
    """A River ``LogisticRegression`` / ``LinearRegression`` as plain data.

    Its nested objects (optimizer, loss, schedules, initializer) must be the defaults, which are
    rebuilt by the constructor, except plain SGD and constant intercept rates (stored as
    ``sgd_lr`` and ``intercept_lr``); the plain parameters, weights, intercept, the optimizer's
    iteration count and the L1 accumulators are stored. Anything else is a ``ValueError``.

    >>> from river import linear_model
    >>> model = linear_model.LogisticRegression(l2=0.01)
    >>> model.learn_one({"a": 1.0}, True)
    >>> clone = linear_from_state(linear_to_state(model))
    >>> clone.predict_proba_one({"a": 2.0}) == model.predict_proba_one({"a": 2.0}), clone.l2
    (True, 0.01)
    """
    name = type(estimator).__name__
    cls = LINEAR_MODELS.get(name)
    if cls is not type(estimator):
        raise ValueError(f"{name} cannot be checkpointed (only {sorted(LINEAR_MODELS)})")
    defaults = cls()._get_params()
    params: dict[str, Any] = {}
    for key, value in estimator._get_params().items():
        obj = getattr(estimator, key, None)
        if key == "intercept_lr" and type(obj) is optim.schedulers.Constant:
            params[key] = checkpoint.plain(float(obj.learning_rate), "intercept_lr")
        elif key == "optimizer" and type(obj) is optim.SGD and type(obj.lr) is optim.schedulers.Constant:
            params["sgd_lr"] = checkpoint.plain(float(obj.lr.learning_rate), "sgd_lr")
        elif isinstance(value, tuple):  # another nested River object: must be the default
            if value != defaults[key]:
                raise ValueError(f"{name}: a non-default {key} cannot be checkpointed as plain data")
        else:
            params[key] = checkpoint.plain(value, f"{name} parameter {key!r}")
    state = {
        "class": name,
        "params": params,
        "weights": _float_dict(estimator._weights.to_dict(), "weights"),
        "intercept": float(estimator.intercept),
        "n_iterations": int(estimator.optimizer.n_iterations),
    }
    if estimator.l1:
        state["max_cum_l1"] = float(estimator.max_cum_l1)
        state["cum_l1"] = _float_dict(estimator.cum_l1.to_dict(), "cum_l1")
    return state


def linear_from_state(state: Any) -> Any:
    """Rebuild what :func:`linear_to_state` wrote; ``ValueError`` for anything else."""
    require = checkpoint.require
    require(isinstance(state, dict), "baseline state is not a dict")
    cls = LINEAR_MODELS.get(state.get("class")) if isinstance(state.get("class"), str) else None
    if cls is None:
        raise ValueError(f"baseline class {state.get('class')!r} is not on the allow-list")
    params = state.get("params")
    require(isinstance(params, dict), "baseline parameters are not a dict")
    allowed = set(inspect.signature(cls).parameters) - {"optimizer"} | {"sgd_lr"}
    for key, value in params.items():
        require(key in allowed, f"{cls.__name__} has no parameter {key!r}")
        checkpoint.plain(value, f"parameter {key!r}")
    params = dict(params)
    if "sgd_lr" in params:
        params["optimizer"] = optim.SGD(params.pop("sgd_lr"))
    est = cls(**params)
    l1_keys = {"max_cum_l1", "cum_l1"} if est.l1 else set()
    require(
        set(state) == {"class", "params", "weights", "intercept", "n_iterations", *l1_keys},
        f"baseline state has keys {sorted(map(str, state))}",
    )
    est._weights = utils.VectorDict(_float_dict(state["weights"], "weights"))
    intercept, n_iter = state["intercept"], state["n_iterations"]
    require(type(intercept) is float and math.isfinite(intercept), "intercept is not finite")
    require(type(n_iter) is int and n_iter >= 0, "n_iterations is not a count")
    est.intercept, est.optimizer.n_iterations = intercept, n_iter
    if est.l1:
        max_cum = state["max_cum_l1"]
        require(type(max_cum) is float and math.isfinite(max_cum), "max_cum_l1 is not finite")
        est.max_cum_l1 = max_cum
        est.cum_l1 = utils.VectorDict(_float_dict(state["cum_l1"], "cum_l1"), optim.initializers.Zeros())
    return est


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists (configured values come from JSON), for comparing."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _kind_of(estimator: Any) -> str:
    return "das" if type(estimator).__name__ in checkpoint.ESTIMATORS else "linear"


def _save(estimator: Any, path: Path, extra: dict[str, Any]) -> None:
    if _kind_of(estimator) == "das":  # weights-only estimator format
        checkpoint.save_estimator(estimator, path, extra=extra)
        return
    payload = {"format": _LINEAR_FORMAT, "baseline": linear_to_state(estimator), "extra": extra}
    checkpoint.save(payload, path)


def _load(path: Path, kind: str | None, limits: checkpoint.Limits) -> tuple[Any, dict[str, Any]]:
    """``(estimator, extra)`` from ``path``; :class:`CheckpointError` for anything wrong (the
    caller then runs the model's trial)."""
    payload = checkpoint.load(path, limits)
    fmt = payload.get("format")
    if fmt == _LEGACY_PICKLE_FORMAT:
        raise CheckpointError(f"{path}: pickled checkpoints are never loaded (not data but code)")
    found = "linear" if fmt == _LINEAR_FORMAT else "das"
    if kind is not None and found != kind:
        raise CheckpointError(f"{path} holds a {found!r} model, the service runs {kind!r}")
    if found == "das":
        return checkpoint.load_estimator(path, limits, check=False)
    extra = payload.get("extra", {})
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: extra data is not a dict")
    checkpoint.guarded(lambda: checkpoint.plain_tree(extra, "extra data"), str(path))
    estimator = checkpoint.guarded(lambda: linear_from_state(payload.get("baseline")), str(path))
    return estimator, extra


class CheckpointStore:
    """Save and load :class:`~consumers.model.PartitionState` per topic-partition.

    Parameters
    ----------
    root
        Checkpoint folder; instances of one consumer group must share it (same host, or a
        shared volume) for model state to follow partitions across rebalances.
    keep
        How many checkpoint files to keep per partition.
    kind
        The model kind the service runs (``"das"`` or ``"linear"``): a checkpoint of another
        kind is refused like a corrupt one (``None``: accept both).
    on_fallback
        Called with ``"older"`` each time an unreadable checkpoint is skipped for an older
        one, and with ``"fresh"`` when a partition had checkpoints but none could be read
        (the caller then starts a fresh model); each fallback is also logged.

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

    def __init__(
        self,
        root: str | os.PathLike[str],
        keep: int = 2,
        kind: str | None = None,
        on_fallback: Callable[[str], None] | None = None,
        params: Mapping[str, Any] | None = None,
        limits: checkpoint.Limits | None = None,
        stale_after_s: float = 600.0,
    ) -> None:
        if kind not in (None, "das", "linear"):
            raise ValueError(f"kind must be 'das', 'linear' or None, got {kind!r}")
        self.root = Path(root)
        self.keep = max(1, int(keep))
        self.kind = kind
        self.on_fallback = on_fallback
        self.params = dict(params or {})
        self.limits = limits or checkpoint.DEFAULT_LIMITS
        self.stale_after_s = float(stale_after_s)
        if self.root.is_dir():
            for folder in sorted(self.root.glob("*/*")):
                self._remove_stale(folder)

    def _remove_stale(self, folder: Path) -> None:
        if folder.is_dir():
            for path in checkpoint.remove_stale_temp_files(folder, self.stale_after_s):
                log.warning("removed %s, left by a checkpoint save that did not finish", path)

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
        self._remove_stale(self.folder(topic, partition))
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
        trainer = getattr(state.estimator, "trainer", None) if _kind_of(state.estimator) == "das" else None
        if trainer is not None:
            try:
                check_architecture(trainer.net.config, trainer.sizing, self.limits)
            except ValueError as exc:  # said now, not first at the next start
                log.error(
                    "checkpoint %s will be refused at load: its model outgrew the bounds a "
                    "checkpoint may hold (streamdas.checkpoint.Limits): %s",
                    path,
                    exc,
                )
        for _, old in self._files(topic, partition)[self.keep :]:
            old.unlink(missing_ok=True)
        return path

    def _reconcile(self, estimator: Any, where: str) -> None:
        """Log every configured parameter that differs from the checkpoint's, and apply the
        configured value where a DAS estimator may change it while learning."""
        current = estimator._get_params()
        mutable = estimator._mutable_attributes if _kind_of(estimator) == "das" else set()
        apply = {}
        for key, configured in sorted(self.params.items()):
            if key not in current or _plain(current[key]) == _plain(configured):
                continue
            try:  # nested River objects (optimizers, detectors) are not compared
                checkpoint.plain(_plain(current[key]), key)
            except ValueError:
                continue
            use = "configured" if key in mutable else "checkpoint's"
            log.warning(
                "checkpoint %s: parameter %s is %r in the checkpoint and %r in the "
                "configuration; using the %s value",
                where,
                key,
                _plain(current[key]),
                _plain(configured),
                use,
            )
            if key in mutable:
                apply[key] = configured
        if apply:
            try:
                estimator.mutate(apply)
            except (TypeError, ValueError) as exc:  # validated at configuration: not expected
                log.warning(
                    "checkpoint %s: the configured %s cannot be applied (%s); the checkpoint's values stay",
                    where,
                    sorted(apply),
                    exc,
                )

    def _fallback(self, to: str) -> None:
        if self.on_fallback is not None:
            self.on_fallback(to)

    def load(self, topic: str, partition: int) -> Loaded | None:
        """Load the newest readable checkpoint of a partition whose model passes its trial
        (``None`` when there is none, or when none of its files can be read: the caller starts
        a fresh model)."""
        files = self._files(topic, partition)
        for i, (offset, path) in enumerate(files):
            try:
                estimator, extra = _load(path, self.kind, self.limits)
                features = extra.get("features")
                n_records = extra.get("n_records", 0)
                checkpoint.require(
                    features is None
                    or (isinstance(features, list) and all(type(f) is str for f in features)),
                    "features are not a list of names",
                )
                checkpoint.require(type(n_records) is int and n_records >= 0, "bad n_records")
                self._reconcile(estimator, f"{topic}:{partition} ({path.name})")
                x, y = checkpoint.trial_input(estimator)  # features the model knows: within its limits
                checkpoint.self_check(estimator, x, y, str(path))
            except (CheckpointError, ValueError) as exc:
                to = "an older checkpoint" if i + 1 < len(files) else "a fresh model"
                log.error(
                    "checkpoint fallback: %s:%d skips unreadable %s, falls back to %s: %s",
                    topic,
                    partition,
                    path,
                    to,
                    exc,
                )
                self._fallback("older" if i + 1 < len(files) else "fresh")
                continue
            state = PartitionState(
                estimator=estimator,
                features=list(features) if features is not None else None,
                next_offset=offset,
                n_records=n_records,
            )
            return Loaded(state=state, path=path, extra=extra)
        return None
