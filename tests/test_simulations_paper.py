"""Tests of the paper-experiment commands and the 8-puzzle data set."""

from __future__ import annotations

import json

import numpy as np

from simulations.experiments.common import mean_2sd
from simulations.experiments.puzzle import GOAL, N_STATES, bfs_distances, load_puzzle, one_hot
from simulations.paper import fig1, main


def _neighbours(state: tuple[int, ...]) -> list[tuple[int, ...]]:
    b = state.index(0)
    r, c = divmod(b, 3)
    out = []
    for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
        if 0 <= rr < 3 and 0 <= cc < 3:
            s = list(state)
            s[b], s[rr * 3 + cc] = s[rr * 3 + cc], 0
            out.append(tuple(s))
    return out


def test_8puzzle_bfs_is_exact() -> None:
    states, dist = bfs_distances()
    assert states.shape == (N_STATES, 9) and len(set(map(bytes, states))) == N_STATES
    assert tuple(states[0]) == GOAL and dist[0] == 0
    assert int(dist.max()) == 31 and int((dist == 31).sum()) == 2  # the known hardest states
    lookup = {tuple(s): int(d) for s, d in zip(states.tolist(), dist.tolist(), strict=True)}
    rng = np.random.default_rng(0)
    for i in rng.choice(N_STATES, 300, replace=False):
        s, d = tuple(states[i].tolist()), int(dist[i])
        nd = [lookup[n] for n in _neighbours(s)]
        assert all(abs(v - d) == 1 for v in nd)  # moves change the distance by exactly one
        if d > 0:
            assert min(nd) == d - 1  # some move gets closer: BFS depth = optimal length


def test_puzzle_cache_and_features(tmp_path) -> None:
    s1, d1 = load_puzzle(tmp_path)
    assert (tmp_path / "8puzzle_bfs.npz").exists()
    s2, d2 = load_puzzle(tmp_path)
    assert np.array_equal(s1, s2) and np.array_equal(d1, d2)
    X = one_hot(s1[:100])
    assert X.shape == (100, 72) and np.all(X.reshape(100, 8, 9).sum(axis=2) == 1)


def test_fig1_sizes_fall_as_alpha_rises(tmp_path) -> None:
    res = fig1(tmp_path, quick=True)
    small, large = res["rows"]
    assert small["alpha"] < large["alpha"]
    assert sum(large["final_sizes"]) < sum(small["final_sizes"])
    assert (tmp_path / "fig1_sizes_vs_alpha.png").stat().st_size > 0


def test_paper_cli_writes_results(tmp_path) -> None:
    assert main(["fig2", "--quick", "-o", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert [r["start"] for r in res["rows"]] == [10, 100]
    assert (tmp_path / "table.md").read_text().startswith("| start width")
    assert (tmp_path / "fig2_start_widths.png").exists()


def test_mean_2sd() -> None:
    m, s = mean_2sd([0.9, 0.92, 0.94])
    assert abs(m - 0.92) < 1e-12 and abs(s - 0.04) < 1e-12


def test_quick_runs_never_overwrite_full_results(tmp_path, monkeypatch) -> None:
    """`python -m simulations.paper all --quick` writes to results/paper-quick/, not over a full
    run's results/paper/."""
    import json

    from simulations import paper

    def fake(out, quick=False, seed=0):
        return {"table": "quick" if quick else "full"}

    monkeypatch.setattr(paper, "EXPERIMENTS", {"fig1": fake, "fig2": fake})
    monkeypatch.chdir(tmp_path)
    assert paper.main(["all"]) == 0
    assert paper.main(["all", "--quick"]) == 0
    for name in ("fig1", "fig2"):
        assert json.loads((tmp_path / "results/paper" / name / "results.json").read_text())["table"] == "full"
        assert (tmp_path / "results/paper-quick" / name / "table.md").read_text() == "quick\n"
