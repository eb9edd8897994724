"""``python -m benchmarks.scope --quick``: both model scopes run on Tansu and every record gets a
prediction; the shared scope's accuracy is that of one ``learn_one`` loop, give or take."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest

from benchmarks import scope

pytestmark = pytest.mark.integration


def _logs(runs: Path) -> str:
    """The end of every instance's log (INFO): what a failure needs to be read after the fact."""
    return "\n".join(
        f"== {p}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(runs.rglob("instance-*.log"))
    )


def test_doctests() -> None:
    assert doctest.testmod(scope).failed == 0


def test_quick_run_compares_both_scopes_with_the_reference(
    tansu_binary: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANSU", tansu_binary)
    out, runs = tmp_path / "scope.json", tmp_path / "runs"
    argv = ["--quick", "--json", str(out), "--workdir", str(runs), "--log-level", "INFO"]
    assert scope.main(argv) == 0, _logs(runs)
    [row] = json.loads(out.read_text())
    assert (row["stream"], row["records"], row["partitions"]) == ("rbf", 4000, 4)
    shared, partition = row["shared"], row["partition"]
    for result in (shared, partition):
        assert result["predicted"] == 4000 and result["null_predictions_second_half"] == 0, (
            result,
            _logs(runs),
        )
    # 2,000 scored records: a few points of noise around the full run's two
    assert abs(shared["accuracy"] - row["reference"]) <= 5, row
    assert shared["behind_p50"] is not None and partition["behind_p50"] is None
