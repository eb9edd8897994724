"""The partition scope: one model per input partition, checkpointed in a folder.

``--model-scope partition`` (the service's behaviour before the shared scope): each input
partition has its own model (:class:`~consumers.model.PartitionState`), which predicts and
learns that partition's records, and is saved with the partition's next offset in one atomic
file (:class:`~consumers.store.CheckpointStore`). On assignment the partition's newest
checkpoint is loaded (or a model parked at the last revocation, when it is still the newest)
and the consumer seeks to its offset; on a rewind every partition goes back to its checkpoint.
A group's instances must share the folder. :class:`consumers.service.KafkaService` runs the
loop; this is what it asks of the models.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import TopicPartition

from consumers.config import ServiceConfig
from consumers.messages import MAX_KEY_BYTES, Origin
from consumers.model import BatchResult, ModelSpec, PartitionState, make_estimator, process_guarded
from consumers.store import CheckpointStore
from consumers.telemetry import Telemetry

__all__ = ["PartitionScope", "model_spec"]

log = logging.getLogger(__name__)


def model_spec(cfg: ServiceConfig) -> ModelSpec:
    """The configured estimator (task, kind, parameters, seed)."""
    return ModelSpec(task=cfg.task, kind=cfg.model, params=dict(cfg.model_params), seed=cfg.seed)


class PartitionScope:
    """The models of the partitions this instance owns, each with its checkpoints.

    Parameters
    ----------
    cfg
        Service configuration (``checkpoint_dir``, ``checkpoint_keep``, the model).
    telemetry
        Counts checkpoint fallbacks.
    lock
        Held while a model changes (learning, loading); metric scrapes read under it.
    """

    name = "partition"
    #: No limit: a partition's records of a poll are one minibatch.
    max_batch: int | None = None

    def __init__(self, cfg: ServiceConfig, telemetry: Telemetry, lock: threading.RLock) -> None:
        self.cfg = cfg
        self.lock = lock
        self.spec = model_spec(cfg)
        self.store = CheckpointStore(
            cfg.checkpoint_dir,
            keep=cfg.checkpoint_keep,
            kind=cfg.model,
            on_fallback=telemetry.checkpoint_fallback,
            params=cfg.model_params,
        )
        self._parked: dict[TopicPartition, PartitionState] = {}

    # -- the loop's hooks ------------------------------------------------------------------
    def models(self, states: Mapping[TopicPartition, PartitionState]) -> dict[str, Any]:
        """The live models by metric label ``<topic>-<partition>`` (call under the lock)."""
        return {f"{tp.topic}-{tp.partition}": st.estimator for tp, st in list(states.items())}

    def start(self, stop: threading.Event, limit: int = 0) -> bool:
        """Nothing to prepare before the consumer joins."""
        return True

    def refresh(self, states: Mapping[TopicPartition, PartitionState]) -> None:
        """Nothing changes the models between batches."""

    def assign(self, tp: TopicPartition) -> tuple[PartitionState, str]:
        """The model of a newly assigned partition and where it came from: the one parked at
        its revocation if no newer checkpoint exists, else its newest checkpoint, else fresh."""
        parked = self._parked.pop(tp, None)
        latest = self.store.latest_offset(tp.topic, tp.partition)
        if parked is not None and parked.dirty == 0 and latest == parked.next_offset:
            return parked, "memory"
        loaded = self.store.load(tp.topic, tp.partition)
        if loaded is None:
            return self.fresh(), "fresh model"
        return self.configured(loaded.state), str(loaded.path)

    def assigned(self) -> None:
        """An assignment is complete: models parked and not taken back are dropped."""
        self._parked.clear()

    def revoked(self, tp: TopicPartition, state: PartitionState | None, saved: bool) -> None:
        """Park a revoked partition's model when it was saved: if the partition comes back
        before anyone else checkpoints it, it need not be loaded again."""
        if state is not None and saved:
            self._parked[tp] = state

    def lost(self, tp: TopicPartition) -> None:
        self._parked.pop(tp, None)

    def reload(self, tp: TopicPartition, start: int | None) -> tuple[PartitionState, int | None]:
        """A partition's state after a rewind and the offset to seek to: its checkpoint, else
        a fresh model from ``start`` (the first offset polled since it was assigned)."""
        loaded = self.store.load(tp.topic, tp.partition)
        if loaded is None:
            return self.fresh(), start
        state = self.configured(loaded.state)
        return state, state.next_offset

    def process(
        self, state: PartitionState, values: Sequence[bytes | None], keys: Sequence[bytes | None]
    ) -> BatchResult:
        """Predict then learn one partition's records (under the lock)."""
        with self.lock:
            return process_guarded(
                state,
                values,
                task=self.cfg.task,
                max_bytes=self.cfg.max_record_bytes,
                keys=keys,
                max_key_bytes=MAX_KEY_BYTES,
            )

    def forward(self, result: BatchResult, origins: Sequence[Origin]) -> bool:
        """Nothing leaves the instance besides predictions and dead letters."""
        return True

    def flush(self, timeout: float) -> None:
        """No producer of its own."""

    def renew(self) -> bool:
        """No producer of its own to replace: always ready (``True``)."""
        return True

    def save(self, tp: TopicPartition, state: PartitionState) -> bool:
        """Checkpoint one partition (model and next offset, one file); ``True``: a checkpoint."""
        with self.lock:
            self.store.save(tp.topic, tp.partition, state)
        return True

    def close(self) -> None:
        """Nothing to release."""

    # -- models ----------------------------------------------------------------------------
    def fresh(self) -> PartitionState:
        """A fresh model with the configured schema."""
        return self.configured(PartitionState(make_estimator(self.spec)))

    def configured(self, state: PartitionState) -> PartitionState:
        """``state`` with the configured schema (``--features``, or none): a schema stored in
        an older checkpoint, fixed by its first record, is not kept."""
        state.features = list(self.cfg.features) if self.cfg.features else None
        return state
