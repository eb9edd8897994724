"""Smoke test of the benchmark suite: tiny sizes, every table produced. No timing assertions."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest
import torch

from benchmarks import __main__ as suite
from benchmarks.common import PRESETS, Section
from benchmarks.sizing_cost import instrumented

MODULES = ["benchmarks.common", "benchmarks.throughput", "benchmarks.sizing_cost", "benchmarks.scaling",
           "benchmarks.memory", "benchmarks.minibatch", "benchmarks.gpu", "benchmarks.accuracy",
           "benchmarks.__main__"]


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
    for title in ("1. Prequential throughput", "2. Cost of sizing", "3a. Scaling", "3b. Where the time goes",
                  "4. Memory", "5. Mini-batch throughput", "6. GPU", "7. Prequential accuracy"):
        assert title in text, title


def test_every_table_is_filled(smoke: tuple[str, list[Section]]) -> None:
    _, sections = smoke
    by_key: dict[str, list[Section]] = {}
    for s in sections:
        by_key.setdefault(s.key, []).append(s)
    assert set(by_key) == {"throughput", "sizing", "scaling", "profile", "memory", "minibatch", "gpu",
                           "accuracy"}
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

    memory = by_key["memory"][0]
    assert [r[0] for r in memory.rows][-1] == sizes.memory_n
    assert all(r[1] > 0 for r in memory.rows)

    minibatch = by_key["minibatch"][0]
    assert [r[0] for r in minibatch.rows] == list(sizes.batch_sizes)

    accuracy = by_key["accuracy"][0]
    assert len({r[0] for r in accuracy.rows}) == 4
    assert len(accuracy.rows) == 4 * 6
    assert all(0 <= r[2] <= 1 for r in accuracy.rows)
    assert sum("wins" in n or "loses" in n for n in accuracy.notes) == 4


def test_gpu_benchmark_logic_runs_on_cpu() -> None:
    from benchmarks import gpu

    result = gpu.measure("cpu", steps=3, batch=4, cycle_steps=2, warmup=1)
    assert result["cycles"] >= 1
    assert len(result["final_sizes"]) == 5
    headers, rows = gpu.table(result)
    assert len(rows) == 4 and all(len(r) == len(headers) for r in rows)
    assert len(result["das_between"]) <= len(result["das"]) == 3


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
