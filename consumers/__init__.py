"""The streamdas consumer service: Kafka in, predictions out, models that learn and resize.

Run it as ``streamdas consume`` (or ``python -m consumers``); see ``docs/service.md``.

Modules: :mod:`~consumers.config` (flags, env, TOML), :mod:`~consumers.records` (validation
and dead-letter reasons), :mod:`~consumers.model` (predict-then-learn per batch),
:mod:`~consumers.messages` (bounded, standard-JSON predictions and dead letters),
:mod:`~consumers.store` (per-partition checkpoints), :mod:`~consumers.service` (the Kafka
loop of both model scopes), :mod:`~consumers.clients` (Kafka clients and the internal topics),
:mod:`~consumers.partitions` (the partition scope), :mod:`~consumers.embedded` and
:mod:`~consumers.sources` (no-broker mode),
:mod:`~consumers.telemetry` (metrics, health), :mod:`~consumers.broker` (the Tansu test broker).
The shared model scope: :mod:`~consumers.predictor` (predicting with snapshots, forwarding
labelled records), :mod:`~consumers.training` (training records, exactly-once learning),
:mod:`~consumers.learner` (the elected learner), :mod:`~consumers.snapshots` (model snapshots
and their follower), :mod:`~consumers.kafka_state` (chunked, fenced states in Kafka).
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
