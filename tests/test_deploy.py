"""Checks of everything in deploy/: every file parses, the pieces agree with each other and with
the code, and every metric a dashboard or alert rule names is one the service really exports.

The exported set comes from live registries (ServiceMetrics and a ModelCollector over a trained
DASClassifier), never from a hand-written list.
"""

from __future__ import annotations

import configparser
import doctest
import importlib.util
import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import prometheus_client
import pytest
import yaml
from prometheus_fixtures import promtool  # noqa: F401

from consumers.config import ServiceConfig, load_config
from consumers.metrics import ServiceMetrics
from consumers.records import Record, Rejection, parse_record
from simulations.scenarios import SCENARIOS, make_scenario
from streamdas import DASClassifier
from streamdas.metrics import ModelCollector

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
K8S = DEPLOY / "k8s"
K8S_BASE = K8S / "base"
K8S_PARTITION = K8S / "partition-scope"
COMPOSE_PARTITION = DEPLOY / "docker-compose.partition-scope.yml"
METRICS_PORT = 9108


# -- helpers ---------------------------------------------------------------------------------


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def parse_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"{path}:{n}: bad line {line!r}"
        env[key] = value
    return env


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}:{n}: key outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}:{n}: not KEY=VALUE: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined."""
    instructions: list[tuple[str, str]] = []
    buffer = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        word, _, rest = buffer.partition(" ")
        instructions.append((word.upper(), rest.strip()))
        buffer = ""
    assert not buffer, "dangling line continuation"
    return instructions


def import_replay() -> ModuleType:
    spec = importlib.util.spec_from_file_location("streamdas_deploy_replay", DEPLOY / "replay.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_from_env(env: dict[str, Any]) -> ServiceConfig:
    """Load the service config exactly as the service would from this environment."""
    return load_config([], env={k: str(v) for k, v in env.items()})


# -- PromQL: which metric names does an expression use? --------------------------------------

_PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
    "start",
    "end",
}
_PROMETHEUS_GENERATED = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (or a Grafana query with $variables).

    Strings, label matchers, ranges, grouping clauses and function calls are removed first;
    what is left that looks like an identifier is a metric name.
    """
    names: set[str] = set()
    for inner in re.findall(r"label_values\(\s*([^,)]+)", expr):  # Grafana templating
        names |= promql_metric_names(inner)
    expr = re.sub(r"label_values\([^)]*\)", " ", expr)
    expr = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', " ", expr)
    expr = re.sub(r"\$\{[^}]*\}|\$\w+", " ", expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    for match in re.finditer(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", expr):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("streamdas_x", {"streamdas_x"}),
        (
            'sum by (layer) (rate(streamdas_a_total{model="m", layer=~"1|2"}[5m])) > 0.5',
            {"streamdas_a_total"},
        ),
        (
            'histogram_quantile(0.99, sum by (le) (rate(foo_bucket{job="j"}[$__rate_interval])))',
            {"foo_bucket"},
        ),
        (
            "time() - max by (job) (a_seconds) > 900 unless on (job) b_seconds offset 5m",
            {"a_seconds", "b_seconds"},
        ),
        ("a <= on (job, model) group_left max by (job) (b)", {"a", "b"}),
        ('label_values(streamdas_m{job="streamdas"}, instance)', {"streamdas_m"}),
        ("1e3 * 2 > bool 5", set()),
    ],
)
def test_promql_metric_names(expr: str, expected: set[str]) -> None:
    assert promql_metric_names(expr) == expected


# -- what the service exports ----------------------------------------------------------------


def _sample_names(registry: prometheus_client.CollectorRegistry) -> set[str]:
    return {s.name for family in registry.collect() for s in family.samples}


@pytest.fixture(scope="module")
def exported_names() -> set[str]:
    """Every sample name a classifier service and a regressor service expose, read live."""
    clf = DASClassifier(hidden_sizes=(8, 4), batch_size=32, grow_every=128, seed=0)
    samples = list(itertools.islice(make_scenario("complexity", n_samples=600, seed=0), 600))
    X = pd.DataFrame([x for x, _ in samples])
    y = pd.Series([label for _, label in samples])
    clf.learn_many(X, y)
    assert clf.n_sizing_cycles > 0  # so the per-layer grown/pruned counters exist

    names: set[str] = set()
    for task, model, truth, pred in (("classification", {"p0": clf}, 1, 1), ("regression", {}, 1.0, 1.5)):
        registry = prometheus_client.CollectorRegistry()
        ModelCollector(model, registry=registry)
        metrics = ServiceMetrics(registry=registry, task=task)
        metrics.record("predicted")
        metrics.record("learned")
        metrics.record("dead_lettered", reason="invalid_json")
        metrics.observe_predict(0.01)
        metrics.observe_learn(0.01)
        metrics.set_lag(0, 5)
        metrics.mark_checkpoint()
        metrics.checkpoint_fallback("older")
        metrics.observe_prequential(truth, pred)
        metrics.set_broker_up(True)
        metrics.heartbeat()
        metrics.set_snapshot(1, 1, 100, published_at=0.0)  # the shared model scope's
        metrics.watch_learner(lambda: True, lambda: 100)
        names |= _sample_names(registry)
    return names


def test_exported_names_cover_the_model_shape(exported_names: set[str]) -> None:
    for name in (
        "streamdas_model_hidden_units",
        "streamdas_model_units_grown_total",
        "streamdas_model_units_pruned_total",
        "streamdas_model_parameters",
        "streamdas_model_size_bytes",
        "streamdas_prequential_accuracy",
        "streamdas_prequential_mean_absolute_error",
    ):
        assert name in exported_names


def test_unexported_metric_is_caught(exported_names: set[str]) -> None:
    with pytest.raises(AssertionError, match="streamdas_no_such_metric_total"):
        _assert_exported({"bogus": "rate(streamdas_no_such_metric_total[5m])"}, exported_names)
    with pytest.raises(AssertionError, match="streamdas_model_hidden_unit"):  # a typo
        _assert_exported({"typo": "max(streamdas_model_hidden_unit)"}, exported_names)


def _assert_exported(exprs: dict[str, str], exported: set[str]) -> None:
    assert exprs, "no expressions found"
    unknown = {
        where: sorted(promql_metric_names(expr) - exported - _PROMETHEUS_GENERATED)
        for where, expr in exprs.items()
    }
    unknown = {k: v for k, v in unknown.items() if v}
    assert not unknown, f"metrics named but not exported: {unknown}"
    for where, expr in exprs.items():
        assert promql_metric_names(expr), f"{where} names no metric: {expr!r}"


# -- every file parses -----------------------------------------------------------------------


def test_every_deploy_file_parses() -> None:
    files = deploy_files()
    assert len(files) >= 15
    for path in files:
        name = path.name
        if name.endswith((".yml", ".yaml")):
            docs = load_yaml_all(path)
            assert docs and all(isinstance(d, dict) for d in docs), path
        elif name.endswith(".json"):
            assert isinstance(json.loads(path.read_text()), dict), path
        elif name == "Dockerfile":
            assert parse_dockerfile(path)[0][0] == "FROM"
        elif name.endswith(".dockerignore"):
            assert path.read_text().strip(), path
        elif name.endswith(".service"):
            assert {"Unit", "Service", "Install"} <= set(parse_unit(path)), path
        elif name.endswith(".env"):
            assert parse_env_file(path), path
        elif name.endswith(".py"):
            compile(path.read_text(), str(path), "exec")
        elif name.endswith(".md"):
            assert path.read_text().strip(), path
        else:
            pytest.fail(f"no parser for {path.relative_to(ROOT)}: add one to this test")


# -- Prometheus config and rules -------------------------------------------------------------


def prometheus_configs() -> list[Path]:
    return sorted(PROM.glob("prometheus*.yml"))


def rule_files() -> list[Path]:
    return sorted(p for p in PROM.glob("*.yml") if "groups" in (load_yaml(p) or {}))


@pytest.mark.integration
def test_promtool_check_config(promtool: str) -> None:  # noqa: F811
    configs = prometheus_configs()
    assert len(configs) >= 2
    for config in configs:
        out = subprocess.run(
            [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.integration
def test_promtool_check_rules(promtool: str) -> None:  # noqa: F811
    files = rule_files()
    assert files
    out = subprocess.run(
        [promtool, "check", "rules", *map(str, files)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.integration
def test_promtool_rule_unit_tests(promtool: str) -> None:  # noqa: F811
    """The alerts fire on synthetic bad series and stay quiet on healthy ones."""
    tests = sorted(PROM.glob("*.test.yml"))
    assert tests
    out = subprocess.run(
        [promtool, "test", "rules", *map(str, tests)], capture_output=True, text=True, timeout=120, cwd=PROM
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_rule_unit_tests_cover_every_alert() -> None:
    alerts = {
        r["alert"] for f in rule_files() for g in load_yaml(f)["groups"] for r in g["rules"] if "alert" in r
    }
    tested = {
        t["alertname"]
        for f in PROM.glob("*.test.yml")
        for case in load_yaml(f)["tests"]
        for t in case.get("alert_rule_test", [])
    }
    assert alerts - tested == set()


def test_prometheus_configs_scrape_the_service_port() -> None:
    for config in prometheus_configs():
        data = load_yaml(config)
        for rules in data.get("rule_files", []):
            assert (config.parent / rules).is_file(), (config, rules)
        jobs = {job["job_name"]: job for job in data["scrape_configs"]}
        assert "streamdas" in jobs, config  # the alert rules select job="streamdas"
        ports = [sd["port"] for sd in jobs["streamdas"].get("dns_sd_configs", [])]
        targets = [t for sc in jobs["streamdas"].get("static_configs", []) for t in sc["targets"]]
        assert ports or targets, config
        assert all(p == METRICS_PORT for p in ports)
        assert all(t.endswith(f":{METRICS_PORT}") for t in targets)


def test_alert_rules_required_alerts(exported_names: set[str]) -> None:
    rules = [r for f in rule_files() for g in load_yaml(f)["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    required = {
        "StreamdasModelCollapsed": "streamdas_model_min_hidden_units",
        "StreamdasConsumerLagGrowing": "streamdas_consumer_lag_messages",
        "StreamdasDeadLettersRising": "streamdas_records_total",
        "StreamdasCheckpointStale": "streamdas_last_checkpoint_timestamp_seconds",
        "StreamdasAccuracyFalling": "streamdas_prequential_accuracy",
    }
    for alert, metric in required.items():
        assert alert in alerts, alert
        assert metric in promql_metric_names(alerts[alert]["expr"]), alert
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, name
        assert rule["annotations"]["summary"], name
    _assert_exported({r.get("alert", r.get("record")): r["expr"] for r in rules}, exported_names)


# -- Grafana ---------------------------------------------------------------------------------


def _walk(obj: Any) -> Iterator[dict[str, Any]]:
    if isinstance(obj, dict):
        yield obj
        for value in obj.values():
            yield from _walk(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _walk(value)


def dashboard_exprs(dashboard: dict[str, Any]) -> dict[str, str]:
    exprs: dict[str, str] = {}
    for node in _walk(dashboard):
        if isinstance(node.get("expr"), str):
            exprs[f"{node.get('refId', node.get('name', '?'))}@{len(exprs)}"] = node["expr"]
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if var.get("type") == "query" and query:
            exprs["$" + var["name"]] = query
    return exprs


def test_dashboards(exported_names: set[str]) -> None:
    datasources = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    uids = {ds["uid"] for ds in datasources["datasources"]}
    dashboards = sorted(DASHBOARDS.glob("*.json"))
    assert dashboards
    for path in dashboards:
        dash = json.loads(path.read_text())
        assert dash["uid"] and dash["title"]
        panels = dash["panels"]
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), "duplicate panel ids"
        for node in _walk(dash):
            ds = node.get("datasource")
            if isinstance(ds, dict):
                assert ds.get("uid") in uids, (path.name, ds)
        exprs = dashboard_exprs(dash)
        _assert_exported(exprs, exported_names)
        used = set().union(*map(promql_metric_names, exprs.values()))
        for needed in (
            "streamdas_model_hidden_units",  # layer sizes
            "streamdas_prequential_accuracy",  # accuracy
            "streamdas_consumer_lag_messages",  # lag
            "streamdas_dead_letters_total",  # dead letters
            "streamdas_records_total",
        ):  # throughput
            assert needed in used, f"{path.name}: no panel shows {needed}"
        for panel in panels:
            if panel["type"] != "row":
                assert panel.get("targets"), panel["title"]
            g = panel["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]


def test_grafana_dashboard_provider_points_at_the_mounted_folder() -> None:
    provider = load_yaml(DEPLOY / "grafana/provisioning/dashboards/streamdas.yml")
    path = provider["providers"][0]["options"]["path"]
    compose = load_yaml(DEPLOY / "docker-compose.yml")
    mounts = dict(v.split(":")[:2][::-1] for v in compose["services"]["grafana"]["volumes"])
    assert mounts[path] == "./grafana/dashboards"


# -- docker-compose --------------------------------------------------------------------------


def test_compose_file() -> None:
    compose = load_yaml(DEPLOY / "docker-compose.yml")
    services = compose["services"]
    assert {"kafka", "streamdas", "producer", "prometheus", "grafana"} <= set(services)
    assert not any(
        "zookeeper" in name or "zookeeper" in str(s.get("image", "")) for name, s in services.items()
    )

    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and "broker" in kafka["KAFKA_PROCESS_ROLES"]
    assert str(services["kafka"]["image"]).startswith("apache/kafka:")

    service = services["streamdas"]
    assert service["deploy"]["replicas"] == 2
    cfg = config_from_env(service["environment"])
    assert cfg.group_id and cfg.metrics_address == "0.0.0.0" and cfg.metrics_port == METRICS_PORT
    assert cfg.bootstrap_servers.split(":")[0] == "kafka"
    # the shared model scope, said explicitly: its state lives in Kafka, no volume at all
    assert service["environment"]["STREAMDAS_MODEL_SCOPE"] == "shared" == cfg.model_scope
    assert not service.get("volumes"), service.get("volumes")
    assert "checkpoints" not in (compose.get("volumes") or {})
    build = service["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"

    # the producer replays an existing scenario into the topic the service reads
    producer = services["producer"]
    assert producer["entrypoint"][-1] == "deploy/replay.py"
    args = import_replay().build_parser().parse_args(producer["command"])
    assert args.scenario in SCENARIOS
    prod_cfg = config_from_env(producer["environment"])
    assert prod_cfg.topics == cfg.topics and prod_cfg.bootstrap_servers == cfg.bootstrap_servers

    # the topic-creation script creates the service's topics, and the shared scope's internal
    # ones with one partition each, the state and snapshot topics compacted
    init = " ".join(services["kafka-init"]["command"])
    for topic in (*cfg.topics, cfg.output_topic, cfg.dead_letter_topic):
        assert f"{topic}:" in init, topic
    internal = cfg.topic_names()
    loops = re.findall(r"for topic in ([^;]+); do(.*?)done", init, re.S)
    compacted = [(names, body) for names, body in loops if "cleanup.policy=compact" in body]
    assert len(compacted) == 1, init
    names, body = compacted[0]
    assert set(names.split()) == {internal.state, internal.snapshots}
    assert "--partitions 1" in body and "segment.ms=" in body
    train = re.search(rf"--topic {re.escape(internal.train)} --partitions (\d+)", init)
    assert train and train.group(1) == "1", init

    # bind-mounted files exist
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, source)

    prom_mounts = dict(v.split(":")[:2][::-1] for v in services["prometheus"]["volumes"])
    prom_config = load_yaml(DEPLOY / prom_mounts["/etc/prometheus/prometheus.yml"])
    for rules in prom_config["rule_files"]:
        assert f"/etc/prometheus/{rules}" in prom_mounts, rules
    dns = prom_config["scrape_configs"][0]["dns_sd_configs"][0]["names"]
    assert dns == ["streamdas"]


def test_compose_partition_scope_override() -> None:
    """The override turns the replicas into the partition scope, all mounting one volume."""
    compose = load_yaml(DEPLOY / "docker-compose.yml")
    override = load_yaml(COMPOSE_PARTITION)
    assert set(override["services"]) == {"streamdas"} <= set(compose["services"])
    base, patch = compose["services"]["streamdas"], override["services"]["streamdas"]
    # docker compose merges `environment` by key and `volumes` by target path
    env = {**base["environment"], **patch["environment"]}
    cfg = config_from_env(env)
    assert cfg.model_scope == "partition"
    volumes = {v.split(":")[1]: v.split(":")[0] for v in [*base.get("volumes", []), *patch["volumes"]]}
    source = volumes[cfg.checkpoint_dir]
    assert source in override["volumes"]  # a named volume, so every replica mounts the same one
    assert not source.startswith((".", "/"))
    assert "docker-compose.partition-scope.yml" in (DEPLOY / "docker-compose.yml").read_text()


def test_readme_names_the_internal_topics() -> None:
    """deploy/README.md describes the topics the shared scope uses, under the names it uses."""
    readme = (DEPLOY / "README.md").read_text()
    names = ServiceConfig(group_id="streamdas").topic_names()
    for field, name in zip(names._fields, names, strict=True):
        assert f"`<group>.{name.split('.', 1)[1]}`" in readme, field
        assert name in readme, name
    for setting in (
        "cleanup.policy=compact",
        "segment.ms=",
        "kafka-acls.sh",
        "ReadWriteMany",
        "k8s/partition-scope",
        "docker-compose.partition-scope.yml",
    ):
        assert setting in readme, setting


def test_replay_messages_are_valid_service_records() -> None:
    replay = import_replay()
    failures, _ = doctest.testmod(replay, optionflags=doctest.ELLIPSIS)
    assert failures == 0
    good = [parse_record(v) for _, v in replay.messages("complexity", n_samples=50, seed=1)]
    assert all(isinstance(r, Record) and r.y is not None for r in good)
    mixed = [parse_record(v) for _, v in replay.messages("sea_abrupt", 400, seed=2, bad_fraction=0.2)]
    rejected = [r for r in mixed if isinstance(r, Rejection)]
    assert 40 < len(rejected) < 120
    assert {r.reason for r in rejected} == {"invalid_json", "non_numeric_feature"}
    regression = [
        parse_record(v, task="regression") for _, v in replay.messages("friedman", n_samples=20, seed=1)
    ]
    assert all(isinstance(r, Record) for r in regression)


def test_replay_cli_dry_run() -> None:
    out = subprocess.run(
        [sys.executable, str(DEPLOY / "replay.py"), "--dry-run", "--limit", "5", "--scenario", "sea_abrupt"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 5
    assert all(isinstance(parse_record(line.encode()), Record) for line in lines)


# -- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile() -> None:
    instructions = parse_dockerfile(DEPLOY / "Dockerfile")
    kinds = [k for k, _ in instructions]
    args = {k: [a for kk, a in instructions if kk == k] for k in kinds}
    assert kinds[0] == "FROM"
    assert any("download.pytorch.org/whl/cpu" in run and "torch==" in run for run in args["RUN"])
    torch_run = next(i for i, (k, a) in enumerate(instructions) if "torch==" in a)
    pip_install_dot = next(i for i, (k, a) in enumerate(instructions) if k == "RUN" and "pip install ." in a)
    assert torch_run < pip_install_dot, "CPU torch must be installed before the package"
    for copy in args["COPY"]:
        *sources, _dest = shlex.split(copy)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source missing from the repository: {source}"
    assert json.loads(args["ENTRYPOINT"][-1]) == ["streamdas"]
    assert json.loads(args["CMD"][-1]) == ["consume"]
    assert args["EXPOSE"] == [str(METRICS_PORT)]
    assert "/livez" in args["HEALTHCHECK"][-1]
    user = args["USER"][-1]
    assert user not in ("root", "0")
    env = " ".join(args["ENV"])
    assert "STREAMDAS_METRICS_ADDRESS=0.0.0.0" in env
    assert f"STREAMDAS_METRICS_PORT={METRICS_PORT}" in env
    # the default (shared) scope writes no files: no anonymous volume for every container
    assert "VOLUME" not in kinds

    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for copy in args["COPY"]:
        for source in shlex.split(copy)[:-1]:
            assert f"!{source.rstrip('/')}" in {i.rstrip("/") for i in ignore}, source


# -- Kubernetes ------------------------------------------------------------------------------

Objects = dict[tuple[str, str], dict[str, Any]]


def k8s_objects() -> Objects:
    """The base's objects (``k8s/base/``) and the optional ones next to it (the PodMonitor)."""
    objects: Objects = {}
    for path in sorted([*K8S_BASE.glob("*.yaml"), *K8S.glob("*.yaml")]):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml_all(path):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def kustomization_resources(folder: Path) -> list[Path]:
    """The resources a kustomization.yaml lists, each checked to exist."""
    paths = [(folder / r).resolve() for r in load_yaml(folder / "kustomization.yaml")["resources"]]
    for path in paths:
        assert path.is_file() or (path / "kustomization.yaml").is_file(), path
    return paths


def k8s_partition_objects() -> Objects:
    """The partition-scope overlay applied by hand: its resources, and its strategic-merge
    patches for the two shapes it uses (ConfigMap data by key, a container's volumeMounts and
    the pod's volumes appended), each patch checked to name an object and container it patches.
    """
    resources = kustomization_resources(K8S_PARTITION)
    assert K8S_BASE in resources  # the overlay builds on the same base the default applies
    objects = {
        key: json.loads(json.dumps(doc)) for key, doc in k8s_objects().items() if key[0] != "PodMonitor"
    }
    for path in resources:
        if path.is_file():
            for doc in load_yaml_all(path):
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    patches = load_yaml(K8S_PARTITION / "kustomization.yaml")["patches"]
    assert patches
    for entry in patches:
        assert set(entry) == {"path"}, entry  # no target: the patch names its object
        for patch in load_yaml_all(K8S_PARTITION / entry["path"]):
            key = (patch["kind"], patch["metadata"]["name"])
            assert key in objects, f"{entry['path']} patches no object: {key}"
            target = objects[key]
            assert patch["metadata"]["namespace"] == target["metadata"]["namespace"]
            if patch["kind"] == "ConfigMap":
                target["data"].update(patch["data"])
                continue
            assert patch["kind"] == "Deployment", entry
            pod, pod_patch = target["spec"]["template"]["spec"], patch["spec"]["template"]["spec"]
            containers = {c["name"]: c for c in pod["containers"]}
            for container in pod_patch["containers"]:
                assert container["name"] in containers, container["name"]
                containers[container["name"]].setdefault("volumeMounts", []).extend(container["volumeMounts"])
            pod.setdefault("volumes", []).extend(pod_patch.get("volumes", []))
    return objects


def pod_config(objects: Objects) -> tuple[dict[str, Any], dict[str, Any], ServiceConfig]:
    """The Deployment's pod, its container, and the service config it runs with."""
    pod = objects[("Deployment", "streamdas")]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    config_map = objects[("ConfigMap", container["envFrom"][0]["configMapRef"]["name"])]
    env = dict(config_map["data"])
    env.update({e["name"]: "pod-name" for e in container.get("env", []) if "valueFrom" in e})
    assert {e["name"] for e in container.get("env", [])} == {"STREAMDAS_CLIENT_ID"}
    return pod, container, config_from_env(env)


def memory_bytes(quantity: str) -> float:
    """A Kubernetes memory quantity in bytes ('512Mi', '1Gi', '2.5G', '1000000')."""
    match = re.fullmatch(r"([0-9.]+)([KMGT]i?)?", quantity)
    assert match, quantity
    number, unit = float(match.group(1)), match.group(2) or ""
    base = 1024 if unit.endswith("i") else 1000
    return number * base ** ("KMGT".index(unit[0]) + 1 if unit else 0)


def assert_shared_scope(objects: Objects) -> None:
    """No checkpoint volume anywhere: the shared scope keeps its state in Kafka."""
    pod, container, cfg = pod_config(objects)
    config_map = objects[("ConfigMap", container["envFrom"][0]["configMapRef"]["name"])]
    assert config_map["data"]["STREAMDAS_MODEL_SCOPE"] == "shared" == cfg.model_scope
    assert "STREAMDAS_CHECKPOINT_DIR" not in config_map["data"]
    assert not [key for key in objects if key[0] == "PersistentVolumeClaim"]
    volumes = pod["spec"].get("volumes", [])
    assert all(set(v) == {"name", "emptyDir"} for v in volumes), volumes
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    if container["securityContext"].get("readOnlyRootFilesystem"):
        assert "/tmp" in mounts  # the one writable folder
    assert mounts <= {"/tmp"}, mounts
    # two Python processes with torch per pod: the service and its learner's child process
    assert cfg.learner_mode == "process"
    assert memory_bytes(container["resources"]["requests"]["memory"]) >= 2 * 400e6
    assert (
        memory_bytes(container["resources"]["limits"]["memory"])
        >= memory_bytes(container["resources"]["requests"]["memory"]) + 1e9
    )


def assert_partition_scope(objects: Objects) -> None:
    """Every replica mounts one ReadWriteMany claim at the checkpoint folder it is told to use."""
    pod, container, cfg = pod_config(objects)
    assert cfg.model_scope == "partition"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert cfg.checkpoint_dir in mounts, (cfg.checkpoint_dir, mounts)
    claim = volumes[mounts[cfg.checkpoint_dir]]["persistentVolumeClaim"]["claimName"]
    pvc = objects[("PersistentVolumeClaim", claim)]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    deployment = objects[("Deployment", "streamdas")]
    assert pvc["metadata"]["namespace"] == deployment["metadata"]["namespace"]


def test_kubernetes_manifests() -> None:
    objects = k8s_objects()
    assert kustomization_resources(K8S) == [K8S_BASE]
    for path in kustomization_resources(K8S_BASE):
        assert path.parent == K8S_BASE and path.is_file(), path

    deployment = objects[("Deployment", "streamdas")]
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    pod, container, cfg = pod_config(objects)
    assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert cfg.group_id  # one group for every replica: they split the partitions
    assert cfg.metrics_address == "0.0.0.0" and cfg.metrics_port == METRICS_PORT

    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(annotations["prometheus.io/port"]) == ports["metrics"] == METRICS_PORT
    # a broker outage makes replicas unready, never restarts them
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    assert_shared_scope(objects)

    service = objects[("Service", "streamdas-metrics")]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] in ports
    namespaces = {o["metadata"].get("namespace") for o in objects.values()} - {None}
    assert namespaces == {"streamdas"}
    prom = load_yaml(PROM / "prometheus-kubernetes.yml")
    name = prom["scrape_configs"][0]["dns_sd_configs"][0]["names"][0]
    assert name.startswith("streamdas-metrics.streamdas.svc")

    monitor = objects[("PodMonitor", "streamdas")]
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports


def test_kubernetes_partition_scope_overlay() -> None:
    assert_partition_scope(k8s_partition_objects())


def test_scope_checks_can_fail() -> None:
    """Each scope's check rejects the other scope's manifests."""
    with pytest.raises((AssertionError, KeyError)):
        assert_shared_scope(k8s_partition_objects())
    with pytest.raises((AssertionError, KeyError)):
        assert_partition_scope(k8s_objects())
    broken = k8s_partition_objects()
    broken[("ConfigMap", "streamdas")]["data"]["STREAMDAS_CHECKPOINT_DIR"] = "/elsewhere"
    with pytest.raises(AssertionError):
        assert_partition_scope(broken)


def kustomize(folder: Path) -> Objects:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (optional check)")
    out = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}


def test_kubectl_kustomize_renders() -> None:
    objects = kustomize(K8S)
    assert {"Namespace", "Deployment", "ConfigMap", "Service"} <= {kind for kind, _ in objects}
    assert_shared_scope(objects)
    assert objects.keys() == {k for k in k8s_objects() if k[0] != "PodMonitor"}


def test_kubectl_kustomize_renders_partition_scope() -> None:
    objects = kustomize(K8S_PARTITION)
    assert_partition_scope(objects)
    by_hand = k8s_partition_objects()
    assert objects.keys() == by_hand.keys()
    assert pod_config(objects)[2] == pod_config(by_hand)[2]


# -- systemd ---------------------------------------------------------------------------------


def test_systemd_unit() -> None:
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert units
    for path in units:
        unit = parse_unit(path)
        service = unit["Service"]
        exec_start = shlex.split(service["ExecStart"][-1])
        assert Path(exec_start[0]).name == "streamdas" and exec_start[1:] == ["consume"]
        assert service["KillSignal"] == ["SIGTERM"]
        assert unit["Install"]["WantedBy"] == ["multi-user.target"]
        env_file = Path(service["EnvironmentFile"][0].lstrip("-"))
        shipped = DEPLOY / "systemd" / env_file.name
        env = parse_env_file(shipped)
        for assignment in service.get("Environment", []):
            key, _, value = assignment.partition("=")
            env[key] = value.replace("%i", str(METRICS_PORT)).replace("%H", "host")
        cfg = config_from_env(env)
        assert cfg.metrics_port == METRICS_PORT
        assert cfg.metrics_address == "127.0.0.1"  # loopback on a plain host
        assert parse_env_file(shipped)["STREAMDAS_MODEL_SCOPE"] == "shared" == cfg.model_scope
        assert cfg.checkpoint_dir.startswith("/var/lib/streamdas")  # for the partition scope
        assert "streamdas" in service["StateDirectory"]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (optional check)")
    for path in sorted((DEPLOY / "systemd").glob("*.service")):
        text = path.read_text().replace("/opt/streamdas/.venv/bin/streamdas", "/bin/true")
        copy = tmp_path / path.name
        copy.write_text(text)
        target = copy if "@." not in path.name else tmp_path / path.name.replace("@.", f"@{METRICS_PORT}.")
        out = subprocess.run(
            [analyze, "verify", str(target)], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        messages = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
        assert not messages, messages


def test_configparser_reads_unit() -> None:
    """Unit files are also plain INI (for tools that read them that way)."""
    for path in (DEPLOY / "systemd").glob("*.service"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read_string(path.read_text())
        assert parser.has_section("Service")


def test_service_command_exists(capsys: pytest.CaptureFixture[str]) -> None:
    """`streamdas consume` (Dockerfile ENTRYPOINT/CMD, compose, k8s, systemd) is a real command."""
    import importlib
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module_name, _, func = scripts["streamdas"].partition(":")
    main = getattr(importlib.import_module(module_name), func)
    with pytest.raises(SystemExit) as exc:
        main(["consume", "--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--metrics-port", "--metrics-address", "--group-id", "--checkpoint-dir"):
        assert flag in help_text, flag
