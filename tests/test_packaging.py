"""How streamdas installs: the library alone needs torch, River and NumPy (no Kafka, Prometheus or
plotting package); the service and the simulations are extras; ``benchmarks`` is not installed;
the wheel ships ``py.typed``; a command whose extra is missing says what to install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from streamdas.cli import main

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SERVICE = {"kafka-python", "prometheus-client", "crc32c"}
SIM = {"matplotlib", "tqdm", "scikit-learn"}
# import names of the packages above
OPTIONAL_MODULES = ("kafka", "prometheus_client", "crc32c", "matplotlib", "tqdm", "sklearn")


def _names(requirements: list[str]) -> set[str]:
    """Distribution names of requirement strings (``"torch>=2.2"`` -> ``"torch"``)."""
    out = set()
    for req in requirements:
        name = req.split(";")[0]
        for sep in "<>=!~[ ":
            name = name.split(sep)[0]
        out.add(name.strip().lower())
    return out


def _run(code: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, **env},
    )


def test_the_library_depends_on_no_service_or_plotting_package() -> None:
    project = PYPROJECT["project"]
    core = _names(project["dependencies"])
    assert {"torch", "river", "numpy"} <= core
    assert not core & (SERVICE | SIM)
    extras = {name: _names(reqs) for name, reqs in project["optional-dependencies"].items()}
    assert extras["service"] == SERVICE
    assert extras["sim"] == SIM
    assert extras["all"] == {"streamdas"} and project["optional-dependencies"]["all"] == [
        "streamdas[service,sim]"
    ]
    assert {"pytest", "ruff", "mypy"} <= extras["dev"]


def test_setup_and_ci_install_every_extra() -> None:
    makefile = (ROOT / "Makefile").read_text()
    torch_at = makefile.index("pip install -q torch==2.13.0")
    assert makefile.index("pip install -q -e '.[all,dev]'") > torch_at


def test_make_test_checks_format_lint_and_types_first() -> None:
    """``make test`` (what CI runs) runs ruff format --check and ruff check over the whole tree
    and mypy over ``streamdas/`` and ``consumers/`` before pytest."""
    makefile = (ROOT / "Makefile").read_text()
    assert "\ntest: check\n\t$(PY) -m pytest\n" in makefile
    assert (
        "\ncheck: setup\n\t$(VENV)/bin/ruff format --check .\n\t$(VENV)/bin/ruff check .\n"
        "\t$(VENV)/bin/mypy\n"
    ) in makefile
    mypy = PYPROJECT["tool"]["mypy"]
    assert {"streamdas", "consumers"} <= set(mypy["files"])
    assert mypy["disallow_untyped_defs"] and mypy["check_untyped_defs"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_library_works_without_the_optional_packages() -> None:
    """The estimators learn, predict, save and load with every extra's package absent (as in
    ``pip install streamdas``: River's own optional imports fall back as they do there)."""
    code = f"""
import sys, tempfile, pathlib
for name in {OPTIONAL_MODULES!r}:
    sys.modules[name] = None  # import raises ImportError: not installed
from streamdas import DASClassifier, DASRegressor, load_estimator, save_estimator
model = DASClassifier(seed=0)
for i in range(40):
    model.learn_one({{"a": float(i % 3), "b": 1.0}}, i % 2)
assert set(model.predict_proba_one({{"a": 1.0, "b": 1.0}})) == {{0, 1}}
DASRegressor(seed=0).learn_one({{"a": 1.0}}, 2.0)
with tempfile.TemporaryDirectory() as tmp:
    save_estimator(model, pathlib.Path(tmp) / "m.ckpt")
    loaded, _ = load_estimator(pathlib.Path(tmp) / "m.ckpt")
assert loaded.layer_sizes == model.layer_sizes
print("ok")
"""
    out = _run(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ok"]


def test_the_wheel_ships_py_typed_and_no_benchmarks_package(tmp_path: Path) -> None:
    """Build the wheel (setuptools, as pip does) from a copy of the sources and list it."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("streamdas", "consumers", "simulations", "benchmarks"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    code = "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))"
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "dist")],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = tmp_path / "dist" / out.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {"streamdas", "consumers", "simulations"}
    assert "streamdas/py.typed" in names
    requires = [
        line.removeprefix("Requires-Dist: ")
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    unconditional = _names([r for r in requires if "extra ==" not in r])
    assert not unconditional & (SERVICE | SIM)
    assert {"service", "sim", "all", "dev"} <= {
        line.removeprefix("Provides-Extra: ")
        for line in metadata.splitlines()
        if line.startswith("Provides-Extra: ")
    }


@pytest.mark.parametrize(
    ("command", "missing", "extra"),
    [
        ("consume", "kafka", "service"),
        ("consume", "prometheus_client", "service"),
        ("simulate", "matplotlib", "sim"),
        ("simulate", "tqdm", "sim"),
    ],
)
def test_a_command_without_its_extra_says_what_to_install(
    command: str,
    missing: str,
    extra: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # find_spec: not installed
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"streamdas {command}: error: needs {missing}: pip install 'streamdas[{extra}]'\n"
    )


def test_bench_runs_the_checkout_s_suite_although_benchmarks_is_not_installed(tmp_path: Path) -> None:
    code = f"""
import importlib.util, sys
sys.path.insert(0, {str(ROOT)!r})
import streamdas.cli
sys.path.remove({str(ROOT)!r})
sys.path = [p for p in sys.path if p not in ("", ".")]
assert importlib.util.find_spec("benchmarks") is None, "benchmarks is installed"
streamdas.cli.main(["bench", "--help"])
"""
    out = _run(code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage: streamdas bench")


def test_bench_outside_a_checkout_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import streamdas.cli as cli

    monkeypatch.setattr(cli, "__file__", str(tmp_path / "site-packages" / "streamdas" / "cli.py"))
    monkeypatch.setitem(sys.modules, "benchmarks", None)
    with pytest.raises(SystemExit) as exc:
        main(["bench"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("streamdas bench: error: ") and "source checkout" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_import_neither_torch_nor_river(flag: str) -> None:
    """``streamdas --version`` and ``--help`` answer without the heavy imports (the import
    table of ``-X importtime`` lists every module the process loaded)."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "streamdas.cli", flag],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("streamdas 0" if flag == "--version" else "usage: streamdas")
    loaded = {
        line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")
    }
    assert "streamdas" in loaded  # the package ran its __init__ (cli itself runs as __main__)
    top_level = {name.split(".")[0] for name in loaded}
    assert not top_level & {"torch", "river", "numpy", "pandas"}, sorted(top_level)


def test_the_package_s_names_load_on_first_use() -> None:
    code = """
import sys
import streamdas
assert "torch" not in sys.modules
assert sorted(set(streamdas.__all__) - set(dir(streamdas))) == []
from streamdas import DASClassifier, save_estimator
from streamdas.estimators import DASClassifier as defined
assert DASClassifier is defined and save_estimator.__module__ == "streamdas.checkpoint"
assert streamdas.threads.limit_threads  # a submodule, imported on first use
try:
    streamdas.no_such_name
except AttributeError as exc:
    assert "no_such_name" in str(exc)
else:
    raise AssertionError("no AttributeError")
print("ok")
"""
    out = _run(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ok"]


def test_a_fresh_process_loads_a_checkpoint_through_the_checkpoint_module(tmp_path: Path) -> None:
    """The estimators register with the checkpoint module when imported; a process that imports
    only ``streamdas.checkpoint`` (as the service's store does) still loads their files."""
    path = tmp_path / "m.ckpt"
    save = f"""
from streamdas import DASRegressor, save_estimator
model = DASRegressor(seed=0)
for i in range(5):
    model.learn_one({{"a": float(i)}}, float(i))
save_estimator(model, {str(path)!r})
"""
    assert _run(save).returncode == 0
    load = f"""
import sys
from streamdas.checkpoint import load_estimator
assert "streamdas.estimators" not in sys.modules
model, _ = load_estimator({str(path)!r})
print(type(model).__name__, model.n_samples_learned)
"""
    out = _run(load)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["DASRegressor", "5"]


def test_only_listed_submodules_are_imported_by_attribute() -> None:
    import pkgutil

    import streamdas

    modules = {m.name for m in pkgutil.iter_modules(streamdas.__path__) if not m.name.startswith("_")}
    assert modules == streamdas._SUBMODULES  # the table names every submodule, and only those
    with pytest.raises(AttributeError):
        streamdas.__getattr__("os")  # a name outside the table is never turned into an import
