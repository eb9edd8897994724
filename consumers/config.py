"""Service configuration: defaults < TOML file < ``STREAMDAS_*`` environment < command-line flags.

* TOML (``--config FILE`` or ``STREAMDAS_CONFIG``): keys of :class:`ServiceConfig` at the top
  level or under ``[consume]``; a ``[kafka]`` table passed verbatim to kafka-python (security
  settings such as ``security_protocol``, ``sasl_mechanism``, ``sasl_plain_username``,
  ``ssl_cafile``...); a ``[model]`` table of estimator constructor arguments.
* Environment: ``STREAMDAS_<FIELD>`` (e.g. ``STREAMDAS_BOOTSTRAP_SERVERS``,
  ``STREAMDAS_TOPICS=a,b``) and ``STREAMDAS_KAFKA_<OPTION>`` for kafka-python options
  (e.g. ``STREAMDAS_KAFKA_SASL_PLAIN_PASSWORD``).
* Flags: ``--bootstrap-servers``, ``--topics``, ..., ``--kafka OPTION=VALUE`` (repeatable),
  ``--model-param NAME=VALUE`` (repeatable, VALUE parsed as JSON when it can be).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: TOML files need 3.11+
    tomllib = None  # type: ignore[assignment]

__all__ = ["ENV_PREFIX", "ConfigError", "ServiceConfig", "build_parser", "check_config",
           "load_config"]

ENV_PREFIX = "STREAMDAS_"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it (flag, variable or file) and the
    values it accepts. ``streamdas consume`` prints it as one line and exits with status 2."""


@dataclass
class ServiceConfig:
    """Everything the consumer service needs; see ``streamdas consume --help``.

    Examples
    --------
    >>> cfg = load_config(["--topics", "a,b", "--checkpoint-every", "500"], env={})
    >>> cfg.topics, cfg.checkpoint_every, cfg.output_topic
    (['a', 'b'], 500, 'streamdas-predictions')
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    topics: list[str] = field(default_factory=lambda: ["streamdas-input"])
    output_topic: str = "streamdas-predictions"
    dead_letter_topic: str = "streamdas-dead-letters"
    group_id: str = "streamdas"
    client_id: str = "streamdas-consumer"
    auto_offset_reset: str = "earliest"
    session_timeout_ms: int = 45000
    heartbeat_interval_ms: int = 3000
    request_timeout_ms: int = 30000
    max_poll_records: int = 1000
    poll_timeout_ms: int = 200
    task: str = "classification"
    model: str = "das"
    model_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 42
    torch_threads: int = 1
    features: list[str] | None = None
    checkpoint_dir: str = "checkpoints"
    checkpoint_every: int = 10000
    checkpoint_interval_s: float = 30.0
    checkpoint_keep: int = 2
    max_record_bytes: int = 1_048_576
    dead_letter_value_bytes: int = 65_536
    flush_timeout_s: float = 30.0
    retry_backoff_max_s: float = 30.0
    metrics_address: str = "127.0.0.1"
    metrics_port: int | None = None
    stall_seconds: float = 60.0
    kafka: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    output: str = "-"
    dead_letter_output: str | None = None
    limit: int | None = None
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.task not in ("classification", "regression"):
            raise ConfigError(f"argument --task: expected classification or regression, "
                              f"got {self.task!r}")
        if self.model not in ("das", "linear"):
            raise ConfigError(f"argument --model: expected das or linear, got {self.model!r}")
        if not self.topics:
            raise ConfigError("argument --topics: at least one input topic is needed")
        for name, low in (("checkpoint_every", 1), ("max_poll_records", 1),
                          ("max_record_bytes", 1), ("checkpoint_keep", 1), ("torch_threads", 1),
                          ("dead_letter_value_bytes", 0)):
            if getattr(self, name) < low:
                raise ConfigError(f"argument --{name.replace('_', '-')}: expected an integer "
                                  f">= {low}, got {getattr(self, name)!r}")
        if self.checkpoint_interval_s <= 0:
            raise ConfigError("argument --checkpoint-interval-s: expected a number > 0, got "
                              f"{self.checkpoint_interval_s!r}")
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"argument --limit: expected an integer >= 0, got {self.limit!r}")


_HELP: dict[str, str] = {
    "bootstrap_servers": "Kafka bootstrap servers, comma-separated",
    "topics": "input topic(s), comma-separated",
    "output_topic": "topic receiving one prediction per input record",
    "dead_letter_topic": "topic receiving unusable records with the reason",
    "group_id": "consumer group; instances sharing it split the partitions",
    "client_id": "Kafka client id",
    "auto_offset_reset": "where to start a partition with no checkpoint and no commit",
    "session_timeout_ms": "consumer-group session timeout",
    "heartbeat_interval_ms": "consumer-group heartbeat interval",
    "request_timeout_ms": "Kafka request timeout (the consumer uses at least session timeout "
                          "+ 5 s, so a SyncGroup the coordinator holds can complete)",
    "max_poll_records": "largest poll batch (records); each partition's share is one minibatch",
    "poll_timeout_ms": "how long one poll waits for records",
    "task": "classification or regression",
    "model": "das (DASClassifier/DASRegressor) or linear (River linear baseline)",
    "seed": "seed of every fresh model",
    "torch_threads": "torch intra-op and NumPy BLAS threads (1 is fastest for minibatches of small nets)",
    "features": "fixed feature schema, comma-separated (default: none; records bring any "
                "features, up to the model's max_features)",
    "checkpoint_dir": "folder of per-partition checkpoints (shared by a group's instances)",
    "checkpoint_every": "checkpoint after this many records",
    "checkpoint_interval_s": "... or after this many seconds, whichever comes first",
    "checkpoint_keep": "checkpoint files kept per partition",
    "max_record_bytes": "larger values are dead-lettered as oversized",
    "dead_letter_value_bytes": "bytes of the original value a dead letter carries (with its full "
                               "length and SHA-256); lowered to fit the producer's max_request_size",
    "flush_timeout_s": "longest wait for the producer before a checkpoint is postponed",
    "retry_backoff_max_s": "longest pause between reconnection attempts",
    "metrics_address": "address of the /metrics and /healthz server",
    "metrics_port": "port of the /metrics and /healthz server (0: any free port; unset: off)",
    "stall_seconds": "/healthz reports unhealthy when the loop made no progress this long",
    "source": "embedded mode, no broker: a JSONL file, '-' for stdin, 'river:SEA' or "
    "'sim:SCENARIO'",
    "output": "embedded mode: where predictions go (JSONL file, '-' for stdout)",
    "dead_letter_output": "embedded mode: where dead letters go (JSONL file; default stderr)",
    "limit": "stop after this many input records (embedded mode; also caps generated streams)",
    "log_level": "logging level",
}

_LISTS = {"topics", "features"}
_DICTS = {"kafka", "model_params"}


def _field_types() -> dict[str, Any]:
    return {f.name: f.type for f in dataclasses.fields(ServiceConfig)}


def _coerce(name: str, value: Any, where: str | None = None) -> Any:
    """Convert a string (flag or env value) to the type of field ``name``.

    Raises :class:`ConfigError` naming ``where`` (default: the flag) and the expected type.

    >>> _coerce("limit", "abc")
    Traceback (most recent call last):
    ...
    consumers.config.ConfigError: argument --limit: expected an integer, got 'abc'
    """
    if value is None:
        return None
    kind = str(_field_types()[name])
    where = where or f"argument --{name.replace('_', '-')}"
    if name in _LISTS:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list or comma-separated names, got {value!r}")
        return [str(v) for v in value]
    for prefix, convert, what in (("int", int, "an integer"), ("float", float, "a number")):
        if kind.startswith(prefix):
            if isinstance(value, bool) or (not isinstance(value, (str, int, float))):
                raise ConfigError(f"{where}: expected {what}, got {value!r}")
            try:
                return convert(value)
            except ValueError:
                raise ConfigError(f"{where}: expected {what}, got {value!r}") from None
    if kind.startswith("str") and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _json_or_str(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pairs(items: Sequence[str] | None, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"argument --{what}: expected NAME=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = _json_or_str(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The ``streamdas consume`` argument parser (every default is ``None``: unset)."""
    parser = argparse.ArgumentParser(
        prog="streamdas consume",
        description="Kafka consumer service: predict every record, learn the labelled ones "
        "(minibatches), checkpoint and commit at least once. With --source it runs without a "
        "broker.",
    )
    parser.add_argument("--config", help="TOML config file (env STREAMDAS_CONFIG)")
    for f in dataclasses.fields(ServiceConfig):
        if f.name in _DICTS:
            continue
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None,
                            help=_HELP.get(f.name))
    parser.add_argument("--kafka", action="append", metavar="OPTION=VALUE",
                        help="extra kafka-python option (repeatable), e.g. security_protocol=SSL")
    parser.add_argument("--model-param", action="append", metavar="NAME=VALUE",
                        help="estimator constructor argument (repeatable), e.g. lr=0.01")
    return parser


def _from_mapping(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    names = _field_types()
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name == "model" and isinstance(value, Mapping):
            out["model_params"] = dict(value)
        elif name in names:
            if name in _DICTS and not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {key!r} must be a table, got {value!r}")
            out[name] = dict(value) if name in _DICTS else _coerce(
                name, value, f"{where}: setting {key!r}")
        elif name not in ("consume",):
            raise ConfigError(f"{where}: unknown setting {key!r}; accepted: "
                              f"{', '.join(sorted(names))}")
    return out


def load_config(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> ServiceConfig:
    """Build a :class:`ServiceConfig` from a TOML file, the environment and flags."""
    env = os.environ if env is None else env
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    values: dict[str, Any] = {"kafka": {}, "model_params": {}}

    config_path = args.config or env.get(ENV_PREFIX + "CONFIG")
    if config_path:
        if tomllib is None:
            raise ConfigError("argument --config: TOML config files need Python 3.11+ (tomllib)")
        try:
            data = tomllib.loads(Path(config_path).read_text())
        except OSError as exc:
            raise ConfigError(f"argument --config: cannot read {config_path!r}: "
                              f"{exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"argument --config: {config_path!r} is not valid TOML: {exc}") from None
        merged = {k: v for k, v in data.items() if k != "consume"}
        merged.update(data.get("consume", {}))
        for key, value in _from_mapping(merged, config_path).items():
            if key in _DICTS:
                values[key].update(value)
            else:
                values[key] = value

    names = _field_types()
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        rest = key[len(ENV_PREFIX):].lower()
        if rest.startswith("kafka_"):
            values["kafka"][rest[len("kafka_"):]] = _json_or_str(value)
        elif rest.startswith("model_param_"):
            values["model_params"][rest[len("model_param_"):]] = _json_or_str(value)
        elif rest in names and rest not in _DICTS:
            values[rest] = _coerce(rest, value, f"environment variable {key}")

    for name in names:
        if name in _DICTS:
            continue
        value = getattr(args, name, None)
        if value is not None:
            values[name] = _coerce(name, value)
    values["kafka"].update(_pairs(args.kafka, "kafka"))
    values["model_params"].update(_pairs(args.model_param, "model-param"))
    return ServiceConfig(**values)


def check_config(cfg: ServiceConfig) -> None:
    """Check what :func:`load_config` cannot see by itself: that ``--source`` can be opened and
    that ``--model-param`` builds an estimator. Raises :class:`ConfigError`.

    >>> check_config(ServiceConfig(source="sim:nope"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    consumers.config.ConfigError: argument --source: unknown scenario 'nope'; choose from ...
    """
    if cfg.source is not None:
        from consumers.sources import check_source

        try:
            check_source(cfg.source)
        except ValueError as exc:
            raise ConfigError(f"argument --source: {exc}") from None
    if cfg.model == "das":
        from streamdas import DASClassifier, DASRegressor
        from streamdas.params import check_params

        cls = DASClassifier if cfg.task == "classification" else DASRegressor
        try:
            checked = check_params(cls, {"seed": cfg.seed, **cfg.model_params})
            cfg.model_params = {k: checked[k] for k in cfg.model_params}
        except ValueError as exc:
            raise ConfigError(f"argument --model-param: {exc}") from None
    else:
        from consumers.model import ModelSpec, make_estimator

        try:
            make_estimator(ModelSpec(task=cfg.task, kind=cfg.model, params=dict(cfg.model_params)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"argument --model-param: {exc}") from None
