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
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from streamdas.arguments import (
    PORT_MAX,
    check_output_file,
    check_output_folder,
    choice,
    integer,
    number,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: TOML files need 3.11+
    tomllib = None  # type: ignore[assignment]

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "InternalTopics",
    "ServiceConfig",
    "build_parser",
    "check_config",
    "configure_logging",
    "load_config",
]

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
    model_scope: str = "shared"
    train_topic: str = ""
    state_topic: str = ""
    snapshot_topic: str = ""
    publish_every: int = 500
    publish_interval_ms: int = 100
    learner_mode: str = "process"
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
        for name, convert in _TYPES.items():
            value = getattr(self, name)
            if value is not None:
                try:
                    setattr(self, name, convert(value))
                except argparse.ArgumentTypeError as exc:
                    raise ConfigError(f"argument --{name.replace('_', '-')}: {exc}") from None
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ConfigError(
                f"argument --heartbeat-interval-ms: expected less than the session "
                f"timeout ({self.session_timeout_ms} ms), got "
                f"{self.heartbeat_interval_ms}"
            )

    def topic_names(self) -> InternalTopics:
        """The shared scope's topics: those configured, else named after the group.

        >>> ServiceConfig(group_id="fraud", state_topic="fraud-state").topic_names()
        InternalTopics(train='fraud.train', state='fraud-state', snapshots='fraud.snapshots')
        """
        group = self.group_id
        return InternalTopics(
            self.train_topic or f"{group}.train",
            self.state_topic or f"{group}.state",
            self.snapshot_topic or f"{group}.snapshots",
        )


class InternalTopics(NamedTuple):
    """The topics of the shared scope: the learner's input (1 partition) and its two compacted
    state topics (:class:`consumers.kafka_state.KafkaStateStore`)."""

    train: str
    state: str
    snapshots: str


_HELP: dict[str, str] = {
    "bootstrap_servers": "Kafka bootstrap servers, comma-separated",
    "topics": "input topic(s), comma-separated",
    "output_topic": "topic receiving one prediction per input record",
    "dead_letter_topic": "topic receiving unusable records with the reason",
    "group_id": "consumer group; instances sharing it split the partitions",
    "client_id": "Kafka client id",
    "auto_offset_reset": "where to start a partition with no checkpoint and no commit: earliest or latest",
    "session_timeout_ms": "consumer-group session timeout",
    "heartbeat_interval_ms": "consumer-group heartbeat interval",
    "request_timeout_ms": "Kafka request timeout (the consumer uses at least session timeout "
    "+ 5 s, so a SyncGroup the coordinator holds can complete)",
    "max_poll_records": "largest poll batch (records); each partition's share is one minibatch",
    "poll_timeout_ms": "how long one poll waits for records",
    "model_scope": "shared (one model for the whole stream, learned by one elected instance, its "
    "state in Kafka) or partition (one model per input partition, checkpointed in "
    "--checkpoint-dir); see docs/service.md",
    "train_topic": "shared scope: topic of the labelled records for the learner (1 partition; "
    "default <group-id>.train)",
    "state_topic": "shared scope: compacted topic of the learner's state (default <group-id>.state)",
    "snapshot_topic": "shared scope: compacted topic of the model snapshots predictions use "
    "(default <group-id>.snapshots)",
    "publish_every": "shared scope: the learner publishes a snapshot after this many learned records",
    "publish_interval_ms": "... or this many milliseconds after learning one, whichever comes first",
    "learner_mode": "shared scope: run this instance's learner in a process of its own (process) or in "
    "a thread of the service (thread)",
    "task": "classification or regression",
    "model": "das (DASClassifier/DASRegressor) or linear (River linear baseline)",
    "seed": "seed of every fresh model",
    "torch_threads": "torch intra-op and NumPy BLAS threads (1 is fastest for minibatches of small nets)",
    "features": "fixed feature schema, comma-separated (default: none; records bring any "
    "features, up to the model's max_features)",
    "checkpoint_dir": "partition scope: folder of per-partition checkpoints (shared by a group's "
    "instances); unused in the shared scope",
    "checkpoint_every": "checkpoint after this many records (shared scope: the learner's state)",
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
    "source": "embedded mode, no broker: a JSONL file, '-' for stdin, 'river:SEA' or 'sim:SCENARIO'",
    "output": "embedded mode: where predictions go (JSONL file, '-' for stdout)",
    "dead_letter_output": "embedded mode: where dead letters go (JSONL file; default stderr)",
    "limit": "stop after this many input records (embedded mode; also caps generated streams)",
    "log_level": "logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL",
}

_LISTS = {"topics", "features"}
_DICTS = {"kafka", "model_params"}

INT32_MAX = 2**31 - 1
"""Largest value of a Kafka protocol setting (milliseconds, record counts and sizes)."""

SECONDS_MAX = 1e9
"""Largest duration setting, in seconds (longer waits overflow the platform's timers)."""

_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise argparse.ArgumentTypeError(f"expected a non-empty string, got {value!r}")
    return value


def _topic(value: Any) -> str:
    if not isinstance(value, str) or not _TOPIC_RE.fullmatch(value) or value in (".", ".."):
        raise argparse.ArgumentTypeError(
            f"expected a Kafka topic name (1 to 249 of A-Z a-z 0-9 . _ -), got {value!r}"
        )
    return value


def _names(value: Any, what: str = "names") -> list[str]:
    """A comma-separated string or a list: at least one name, no name twice."""
    if isinstance(value, str):
        names = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        names = [str(v) for v in value]
    else:
        raise argparse.ArgumentTypeError(f"expected a list or comma-separated {what}, got {value!r}")
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated {what}, got {value!r}")
    return names


def _topics(value: Any) -> list[str]:
    return [_topic(t) for t in _names(value, "topic names")]


def _topic_or_default(value: Any) -> str:
    """A topic name, or ``""``: the default."""
    return "" if value == "" else _topic(value)


def _servers(value: Any) -> str:
    """``HOST[:PORT]`` entries, comma-separated (IPv6 hosts in brackets when given a port)."""
    bad = argparse.ArgumentTypeError(
        f"expected HOST:PORT entries, comma-separated (e.g. broker-1:9092), got {value!r}"
    )
    if not isinstance(value, str):
        raise bad
    entries = [e.strip() for e in value.split(",")]
    for entry in entries:
        host, port = entry, None
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            if rest:
                port = rest[1:] if rest.startswith(":") else ""
        elif entry.count(":") == 1:
            host, port = entry.split(":")
        if (
            not host
            or (port is not None and not port.isdigit())
            or (port is not None and not 1 <= int(port) <= PORT_MAX)
        ):
            raise bad
    return ",".join(entries)


_SECONDS = number(above=0, high=SECONDS_MAX)

#: Field -> argument type: used for flags (argparse ``type=``), environment variables, TOML
#: values and :class:`ServiceConfig` itself.
_TYPES: dict[str, Callable[[Any], Any]] = {
    "bootstrap_servers": _servers,
    "topics": _topics,
    "output_topic": _topic,
    "dead_letter_topic": _topic,
    "group_id": _text,
    "client_id": _text,
    "auto_offset_reset": choice("earliest", "latest"),
    "session_timeout_ms": integer(1, INT32_MAX),
    "heartbeat_interval_ms": integer(1, INT32_MAX),
    "request_timeout_ms": integer(1, INT32_MAX),
    "max_poll_records": integer(1, INT32_MAX),
    "poll_timeout_ms": integer(0, INT32_MAX),
    "model_scope": choice("shared", "partition"),
    "train_topic": _topic_or_default,
    "state_topic": _topic_or_default,
    "snapshot_topic": _topic_or_default,
    "publish_every": integer(1, INT32_MAX),
    "publish_interval_ms": integer(1, INT32_MAX),
    "learner_mode": choice("process", "thread"),
    "task": choice("classification", "regression"),
    "model": choice("das", "linear"),
    "seed": integer(0, 2**32 - 1),
    "torch_threads": integer(1, 1024),
    "features": _names,
    "checkpoint_dir": _text,
    "checkpoint_every": integer(1, INT32_MAX),
    "checkpoint_interval_s": _SECONDS,
    "checkpoint_keep": integer(1, 1000),
    "max_record_bytes": integer(1, INT32_MAX),
    "dead_letter_value_bytes": integer(0, INT32_MAX),
    "flush_timeout_s": _SECONDS,
    "retry_backoff_max_s": _SECONDS,
    "metrics_address": _text,
    "metrics_port": integer(0, PORT_MAX),
    "stall_seconds": _SECONDS,
    "source": _text,
    "output": _text,
    "dead_letter_output": _text,
    "limit": integer(1, None),
    "log_level": choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", upper=True),
}


def _field_types() -> dict[str, Any]:
    return {f.name: f.type for f in dataclasses.fields(ServiceConfig)}


def _coerce(name: str, value: Any, where: str | None = None) -> Any:
    """Convert a flag, environment or TOML value to field ``name`` through its argument type.

    Raises :class:`ConfigError` naming ``where`` (default: the flag) and what is accepted.

    >>> _coerce("limit", "abc")
    Traceback (most recent call last):
    ...
    consumers.config.ConfigError: argument --limit: expected an integer >= 1, got 'abc'
    >>> _coerce("metrics_port", "99999", "environment variable STREAMDAS_METRICS_PORT")
    Traceback (most recent call last):
    ...
    consumers.config.ConfigError: environment variable STREAMDAS_METRICS_PORT: expected an integer in ...
    """
    if value is None:
        return None
    where = where or f"argument --{name.replace('_', '-')}"
    convert = _TYPES.get(name)
    if convert is None:
        if str(_field_types()[name]).startswith("str") and not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    try:
        return convert(value)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


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
        if not key.strip():
            raise ConfigError(f"argument --{what}: expected NAME=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = _json_or_str(value)
    return out


class _Parser(argparse.ArgumentParser):
    """Its errors are :class:`ConfigError` (``streamdas consume`` prints them as one line)."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    """The ``streamdas consume`` argument parser (every default is ``None``: unset); its errors
    raise :class:`ConfigError`."""
    parser = _Parser(
        prog="streamdas consume",
        description="Kafka consumer service: predict every record, learn the labelled ones "
        "(minibatches), checkpoint and commit at least once. With --source it runs without a "
        "broker.",
    )
    parser.add_argument("--config", help="TOML config file (env STREAMDAS_CONFIG)")
    for f in dataclasses.fields(ServiceConfig):
        if f.name in _DICTS:
            continue
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            type=_TYPES.get(f.name, str),
            help=_HELP.get(f.name),
        )
    parser.add_argument(
        "--kafka",
        action="append",
        metavar="OPTION=VALUE",
        help="extra kafka-python option (repeatable), e.g. security_protocol=SSL",
    )
    parser.add_argument(
        "--model-param",
        action="append",
        metavar="NAME=VALUE",
        help="estimator constructor argument (repeatable), e.g. lr=0.01",
    )
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
            out[name] = dict(value) if name in _DICTS else _coerce(name, value, f"{where}: setting {key!r}")
        elif name not in ("consume",):
            raise ConfigError(f"{where}: unknown setting {key!r}; accepted: {', '.join(sorted(names))}")
    return out


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> ServiceConfig:
    """Build a :class:`ServiceConfig` from a TOML file, the environment and flags."""
    env = os.environ if env is None else env
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    values: dict[str, Any] = {"kafka": {}, "model_params": {}}

    config_path = args.config or env.get(ENV_PREFIX + "CONFIG")
    if config_path:
        if tomllib is None:
            raise ConfigError("argument --config: TOML config files need Python 3.11+ (tomllib)")
        try:
            data = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"argument --config: cannot read {config_path!r}: {exc.strerror or exc}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(f"argument --config: {config_path!r} is not UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"argument --config: {config_path!r} is not valid TOML: {exc}") from None
        if not isinstance(data.get("consume", {}), Mapping):
            raise ConfigError(f"{config_path}: 'consume' must be a table, got {data['consume']!r}")
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
        rest = key[len(ENV_PREFIX) :].lower()
        if rest in ("kafka_", "model_param_"):
            raise ConfigError(f"environment variable {key}: expected {key}<NAME>")
        if rest.startswith("kafka_"):
            values["kafka"][rest[len("kafka_") :]] = _json_or_str(value)
        elif rest.startswith("model_param_"):
            values["model_params"][rest[len("model_param_") :]] = _json_or_str(value)
        elif rest in names and rest not in _DICTS:
            values[rest] = _coerce(rest, value, f"environment variable {key}")

    for name in names:
        if name in _DICTS:
            continue
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value  # already converted by the flag's argument type
    values["kafka"].update(_pairs(args.kafka, "kafka"))
    values["model_params"].update(_pairs(args.model_param, "model-param"))
    return ServiceConfig(**values)


def _check_path(flag: str, path: str, check: Callable[[str], None]) -> None:
    try:
        check(path)
    except ValueError as exc:
        raise ConfigError(f"argument {flag}: {exc}") from None


#: Options the service gives kafka-python itself: flag (or ``None``: fixed by the service).
_OWN_KAFKA_OPTIONS = {
    "bootstrap_servers": "--bootstrap-servers",
    "client_id": "--client-id",
    "group_id": "--group-id",
    "request_timeout_ms": "--request-timeout-ms",
    "auto_offset_reset": "--auto-offset-reset",
    "session_timeout_ms": "--session-timeout-ms",
    "heartbeat_interval_ms": "--heartbeat-interval-ms",
    "max_poll_records": "--max-poll-records",
    "bootstrap_timeout_ms": None,
    "enable_auto_commit": None,
}

#: What :func:`consumers.service.consumer_request_timeout_ms` adds to the session timeout.
_COORDINATOR_MARGIN_MS = 5000


def _check_kafka_options(cfg: ServiceConfig) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    known = set(KafkaConsumer.DEFAULT_CONFIG) | set(KafkaProducer.DEFAULT_CONFIG)
    for option in cfg.kafka:
        if option in _OWN_KAFKA_OPTIONS:
            flag = _OWN_KAFKA_OPTIONS[option]
            raise ConfigError(
                f"argument --kafka: {option} is " + (f"set with {flag}" if flag else "set by the service")
            )
        if option not in known:
            raise ConfigError(
                f"argument --kafka: unknown option {option!r}; expected a "
                "KafkaConsumer or KafkaProducer option of kafka-python "
                "(e.g. security_protocol)"
            )
    # kafka-python refuses a consumer whose request timeout is not between these two
    defaults = KafkaConsumer.DEFAULT_CONFIG
    idle = cfg.kafka.get("connections_max_idle_ms", defaults["connections_max_idle_ms"])
    wait = cfg.kafka.get("fetch_max_wait_ms", defaults["fetch_max_wait_ms"])
    timeout = max(cfg.request_timeout_ms, cfg.session_timeout_ms + _COORDINATOR_MARGIN_MS)
    if isinstance(idle, int) and isinstance(wait, int) and not wait < timeout < idle:
        raise ConfigError(
            f"argument --request-timeout-ms: the consumer's request timeout ({timeout} ms: the "
            f"larger of --request-timeout-ms and --session-timeout-ms + "
            f"{_COORDINATOR_MARGIN_MS}) must lie between fetch_max_wait_ms ({wait}) and "
            f"connections_max_idle_ms ({idle})"
        )


def _check_topics(cfg: ServiceConfig) -> None:
    """The shared scope's topics are valid names, distinct from each other and from the topics
    the service reads and writes.

    >>> _check_topics(ServiceConfig(group_id="my group"))
    Traceback (most recent call last):
    ...
    consumers.config.ConfigError: argument --train-topic: the default 'my group.train' (from ...
    >>> _check_topics(ServiceConfig(topics=["a"], train_topic="a"))
    Traceback (most recent call last):
    ...
    consumers.config.ConfigError: argument --train-topic: 'a' is also an input topic
    """
    names = cfg.topic_names()
    others = {
        **{t: "an input topic" for t in cfg.topics},
        cfg.output_topic: "the output topic",
        cfg.dead_letter_topic: "the dead-letter topic",
    }
    for name, value in zip(("train_topic", "state_topic", "snapshot_topic"), names, strict=True):
        flag = "--" + name.replace("_", "-")
        if not getattr(cfg, name):
            try:
                _topic(value)
            except argparse.ArgumentTypeError:
                raise ConfigError(
                    f"argument {flag}: the default {value!r} (from --group-id) is "
                    f"not a Kafka topic name; set {flag}"
                ) from None
        if value in others:
            raise ConfigError(f"argument {flag}: {value!r} is also {others[value]}")
        others[value] = f"the {name.replace('_', ' ')}"


def check_config(cfg: ServiceConfig) -> None:
    """Check what :func:`load_config` cannot see by itself, before any work starts: that
    ``--source`` can be opened, that the outputs (embedded mode) or the checkpoint folder
    (Kafka mode, partition scope) can be written, that the shared scope's topics are valid and
    distinct, that the ``--kafka`` options are kafka-python's and leave the
    service's own settings alone, and that ``--model-param`` builds an estimator. Raises
    :class:`ConfigError`.

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
        for flag, path in (("--output", cfg.output), ("--dead-letter-output", cfg.dead_letter_output)):
            if path is not None:
                _check_path(flag, path, check_output_file)
    elif cfg.model_scope == "partition":
        _check_path("--checkpoint-dir", cfg.checkpoint_dir, check_output_folder)
    else:
        _check_topics(cfg)
    _check_kafka_options(cfg)
    if cfg.model == "das":
        from streamdas import DASClassifier, DASRegressor
        from streamdas.params import check_params

        cls = DASClassifier if cfg.task == "classification" else DASRegressor
        try:
            checked = check_params(cls, {"seed": cfg.seed, **cfg.model_params})
            cfg.model_params = {k: checked[k] for k in cfg.model_params}
            from consumers.model import check_checkpointable

            check_checkpointable(cls(**checked))
        except ValueError as exc:
            raise ConfigError(f"argument --model-param: {exc}") from None
    else:
        from consumers.model import ModelSpec, make_estimator

        try:
            make_estimator(ModelSpec(task=cfg.task, kind=cfg.model, params=dict(cfg.model_params)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"argument --model-param: {exc}") from None


def configure_logging(cfg: ServiceConfig) -> None:
    """Log to standard error at ``cfg.log_level``, kafka-python's own loggers at WARNING or
    above (their INFO lines are per connection), in one format for the service's processes."""
    import logging
    import sys

    logging.basicConfig(
        level=cfg.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
