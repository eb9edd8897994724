"""Smoke test of the benchmark suite: tiny sizes, every table produced. No timing assertions."""

from __future__ import annotations

import doctest
import importlib
import json
from pathlib import Path

import pytest
import torch

from benchmarks import __main__ as suite
from benchmarks import accuracy
from benchmarks.common import PRESETS, Section
from benchmarks.sizing_cost import instrumented

MODULES = [
    "benchmarks.common",
    "benchmarks.throughput",
    "benchmarks.sizing_cost",
    "benchmarks.scaling",
    "benchmarks.memory",
    "benchmarks.minibatch",
    "benchmarks.gpu",
    "benchmarks.accuracy",
    "benchmarks.peers",
    "benchmarks.startup",
    "benchmarks.__main__",
]


@pytest.fixture(scope="module")
def smoke() -> tuple[str, list[Section]]:
    return suite.run_suite("smoke")


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_cli_writes_the_markdown_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "report.md"
    assert suite.main(["--smoke", "--only", "sizing", "--only", "gpu", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("## streamdas benchmark report")
    assert "2. Cost of sizing" in text and "6. GPU" in text and "1. Prequential" not in text
    assert text in capsys.readouterr().out


def test_report_has_every_table(smoke: tuple[str, list[Section]]) -> None:
    text, _ = smoke
    assert text.startswith("## streamdas benchmark report")
    for title in (
        "1. Prequential throughput",
        "1b. River's own loop",
        "2. Cost of sizing",
        "3a. Scaling",
        "3b. Where the time goes",
        "4. Memory",
        "5. Mini-batch throughput",
        "6. GPU",
        "7a. Classification",
        "7b. Regression",
        "8. Start-up",
    ):
        assert title in text, title


def test_every_table_is_filled(smoke: tuple[str, list[Section]]) -> None:
    _, sections = smoke
    by_key: dict[str, list[Section]] = {}
    for s in sections:
        by_key.setdefault(s.key, []).append(s)
    assert set(by_key) == {
        "throughput",
        "river_loop",
        "sizing",
        "scaling",
        "profile",
        "memory",
        "minibatch",
        "gpu",
        "accuracy",
        "regression",
        "startup",
    }
    sizes = PRESETS["smoke"]
    for key, group in by_key.items():
        for s in group:
            if key == "gpu" and not torch.cuda.is_available():
                assert not s.rows and "Skipped" in s.notes[0]
                continue
            assert s.rows, key
            assert all(len(r) == len(s.headers) for r in s.rows), key

    throughput = by_key["throughput"][0]
    names = [r[0] for r in throughput.rows]
    assert names[0].startswith("DASClassifier")
    assert any("LogisticRegression" in n for n in names) and any("ARF" in n for n in names)
    assert any("HoeffdingAdaptiveTree" in n for n in names)
    assert sum("torch MLP" in n for n in names) == 2
    assert all(r[1] > 0 and 0 <= r[5] <= 1 for r in throughput.rows)
    loop = by_key["river_loop"][0]
    assert [r[0] for r in loop.rows][:2] == [
        "DASClassifier() (defaults)",
        "river StandardScaler | LogisticRegression",
    ]
    assert all(r[1] > 0 and 0.5 < r[5] <= 1 for r in loop.rows)  # SEA: both learn it
    assert any("progressive_val_score" in n for n in loop.notes) and "20,000" in loop.notes[1]

    sizing = by_key["sizing"][0]
    assert [r[0] for r in sizing.rows] == [1_000, 10_000]
    assert sizing.rows[0][1] == sizes.sizing_n // 1_000  # cycles on the N-sample grid
    assert sizing.rows[0][3] > 0  # the grow timer saw the calls

    scaling = by_key["scaling"][0]
    assert len(scaling.rows) == len(sizes.widths) + len(sizes.features)
    assert len(by_key["profile"]) == 2
    profile_rows = {r[0].strip(): r for r in by_key["profile"][0].rows}
    assert profile_rows["learn_one total"][1] == sizes.profile_n
    assert profile_rows["NumPy forward (NumpyForward.__call__)"][1] > 0
    for name in (
        "optimizer step (optimizer_step)",
        "both experts scored, batch kept in the memory (score_and_keep)",
    ):
        assert profile_rows[name][1] > 0, name  # a component the run goes through is seen

    memory = by_key["memory"][0]
    assert [r[0] for r in memory.rows][-1] == sizes.memory_n
    assert all(r[1] > 0 for r in memory.rows)

    minibatch = by_key["minibatch"][0]
    assert [r[0] for r in minibatch.rows] == list(sizes.batch_sizes)

    acc, acc_speed, ladder = by_key["accuracy"]
    assert [r[0] for r in acc.rows] == list(accuracy.CLASSIFICATION)
    assert acc.headers[2:9] == ["DAS", *accuracy.CLS_PEERS, "best peer"][:7]
    for r in acc.rows:
        means = [float(c.split(" ± ")[0]) for c in r[2:8]]
        assert all(0 <= m <= 100 for m in means)
        assert r[8] in accuracy.CLS_PEERS and r[10] in ["DAS", *accuracy.CLS_PEERS]
    assert all(r[1].startswith("[") and r[2].startswith("[") for r in acc_speed.rows)  # widths
    assert any("0.3" in n and "/8" in n for n in acc.notes)
    assert [r[0] for r in ladder.rows] == [name for name, _ in accuracy.LADDER] + ["MLP (64,64)", "ARF"]
    defaults_in_7a = [float(r[2].split(" ± ")[0]) for r in acc.rows]  # the ladder ends at the defaults
    assert [float(v) for v in ladder.rows[-3][1:-1]] == pytest.approx(defaults_in_7a, abs=0.006)
    reg, _ = by_key["regression"]
    assert [r[0] for r in reg.rows] == list(accuracy.REGRESSION)
    assert all(float(c.split(" ± ")[0]) >= 0 for r in reg.rows for c in r[2:7])

    startup = by_key["startup"][0]
    assert [r[0] for r in startup.rows] == ["DASClassifier()", "DASRegressor()"]
    assert all(r[1] == sizes.throughput_n and r[2] > 0 and r[6] >= -1 for r in startup.rows)


def test_accuracy_das_only_reads_peers_from_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"
    stream = ["TrumpApproval"]
    first, labels = accuracy.run_kind("regression", 60, 1, stream, cache=cache)
    assert labels == ["DAS", *accuracy.REG_PEERS]
    stored = json.loads(cache.read_text())
    assert len(stored) == len(labels)
    key = next(k for k in stored if k.endswith("|LinReg"))
    stored[key]["score"] = -1.0  # a marker: only a cache read can bring it back
    cache.write_text(json.dumps(stored))
    again, labels = accuracy.run_kind("regression", 60, 1, stream, [{"lr": 1e-2}], das_only=True, cache=cache)
    assert labels == ["DAS", "DAS[lr=0.01]", *accuracy.REG_PEERS]
    assert again["TrumpApproval"]["LinReg"][0]["score"] == -1.0
    speed = accuracy.sections("regression", again, labels, 60, 1)[1]
    assert any("read from the cache" in n for n in speed.notes)
    assert not any(
        "read from the cache" in n
        for n in accuracy.sections("regression", first, labels[:1] + labels[2:], 60, 1)[1].notes
    )
    das_again, das_first = again["TrumpApproval"]["DAS"][0], first["TrumpApproval"]["DAS"][0]
    assert das_again["score"] == pytest.approx(das_first["score"])
    fresh, _ = accuracy.run_kind("regression", 60, 1, stream, cache=cache)  # the suite never reads it
    assert fresh["TrumpApproval"]["LinReg"][0]["score"] >= 0


def test_accuracy_cli_and_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert accuracy.parse_overrides("batch_size=4,hidden_sizes=(8, 8)") == {
        "batch_size": 4,
        "hidden_sizes": (8, 8),
    }
    with pytest.raises(ValueError, match="key=value"):
        accuracy.parse_overrides("lr")
    with pytest.raises(ValueError, match="unknown classification stream"):
        accuracy.run_kind("classification", 50, 1, ["nope"], cache=None)
    out = tmp_path / "acc.md"
    assert (
        accuracy.main(
            [
                "--kind",
                "classification",
                "--streams",
                "Phishing",
                "--n",
                "80",
                "--seeds",
                "2",
                "--das",
                "batch_size=4",
                "--cache",
                str(tmp_path / "c.json"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = out.read_text()
    assert "| Phishing | 80 |" in text and "DAS[batch_size=4]" in text and "kNN+ADWIN" in text
    assert text in capsys.readouterr().out


def test_gpu_benchmark_logic_runs_on_cpu() -> None:
    from benchmarks import gpu

    result = gpu.measure("cpu", steps=3, batch=4, cycle_steps=2, warmup=1)
    assert result["cycles"] >= 1
    assert len(result["final_sizes"]) == 5
    headers, rows = gpu.table(result)
    assert len(rows) == len(gpu.ROWS) and all(len(r) == len(headers) for r in rows)
    assert all(r[1] > 0 and r[3] > 0 for r in rows)
    das = result["das_graph"]
    assert len(das["each"]) == len(das["cycled"]) == 3 and 1 in das["cycled"]
    assert result["captures"] == 0  # no graphs on the CPU
    assert set(gpu.capture_cost(result)) == {"capture_ms", "cycle_step_extra_ms", "next_step_extra_ms"}
    assert (
        gpu.main(["--device", "cpu", "--steps", "2", "--batch", "4", "--cycle-steps", "1", "--warmup", "0"])
        == 0
    )


def test_instrumented_restores_methods() -> None:
    from streamdas import DASTrainer

    original = DASTrainer.__dict__["grow"]
    with pytest.raises(RuntimeError), instrumented([(DASTrainer, "grow")]):
        assert DASTrainer.__dict__["grow"] is not original
        raise RuntimeError
    assert DASTrainer.__dict__["grow"] is original


def test_unknown_benchmark_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown benchmark"):
        suite.run_suite("smoke", only=["nope"])


def test_river_loop_cli_measures_das_settings_beside_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import throughput

    assert throughput.main(["--smoke", "--das", "batch_warmup=64", "--das", "memory=0,batch_size=8"]) == 0
    out = capsys.readouterr().out
    rows = [line.split(" | ")[0] for line in out.splitlines() if line.startswith("| DAS")]
    assert rows == [
        "| DASClassifier() (defaults)",
        "| DASClassifier(batch_warmup=64)",
        "| DASClassifier(memory=0, batch_size=8)",
    ]


def test_every_profiled_component_names_a_function_of_its_file() -> None:
    """A renamed function would leave its row of table 3b at 0 calls, silently."""
    import ast

    from benchmarks.scaling import COMPONENTS

    root = Path(__file__).resolve().parents[1]
    for label, suffix, func in COMPONENTS:
        if not suffix.startswith("streamdas/"):
            continue
        tree = ast.parse((root / suffix).read_text())
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert func in names, f"{label}: no function {func} in {suffix}"
