"""Regenerate every figure and table of README.md and docs/ from the code: ``make docs``.

    python scripts/make_docs.py                 # everything, full sizes (see the timings below)
    python scripts/make_docs.py --only demo     # one part: demo, defaults, paper, bench, service
    python scripts/make_docs.py --quick --root /tmp/copy   # tiny sizes into a copy (the tests)

Generated text sits between ``<!-- docs:NAME -->`` and ``<!-- /docs:NAME -->`` markers in the
markdown files; everything between them is replaced. Pictures are copied into ``docs/img/``.
Parts and what they run:

* ``demo``      ``streamdas simulate`` (the README picture, the demo tables of
  docs/experiments.md) and ``python -m simulations.growth`` (growth against static widths);
* ``defaults``  the three ``python -m simulations complexity -n 30000 ...`` runs of "Why not the
  estimator's defaults?" and ``python -m benchmarks.pruning_rule`` (the pruning test);
* ``paper``     ``python -m simulations.paper all`` (Fig. 1, Fig. 2, Table I, Tables II/III);
* ``bench``     ``python -m benchmarks`` (the report in docs/benchmarks.md);
* ``service``   the shared scope's benchmarks of docs/benchmarks.md: ``python -m benchmarks.learner``,
  ``python -m benchmarks.scope`` and ``python -m benchmarks.kafka_load --messages 100000 --rate
  10000 --instances 1|2`` (these two start Tansu: ``make setup`` installs it).

Raw outputs go to ``results/docs/`` (``--quick``: ``results/docs-quick/``), never over a run of
your own. Speed tables measure the machine they run on: run ``make docs`` on a quiet one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["PARTS", "main", "replace_block"]

#: The estimator's defaults as ``--das`` arguments of ``python -m simulations`` (with the
#: estimator's own pruning test, ``prune_horizon``, given apart).
_ESTIMATOR_DAS = ["hidden_sizes=(32,32)", "alpha=2e-5", "lr=1e-3", "tau=1e-3", "min_growth=4"]
_ESTIMATOR_DAS += ["grow_every=1000", "batch_size=16"]


def _das_args(*settings: str) -> list[str]:
    return [arg for setting in settings for arg in ("--das", setting)]


#: The "Why not the estimator's defaults?" runs: (label, extra arguments).
DEFAULTS_RUNS = [
    ("estimator defaults", "estimator_defaults", _das_args(*_ESTIMATOR_DAS, "prune_horizon=800")),
    (
        "estimator defaults + paper prune test",
        "estimator_defaults_paper_prune",
        _das_args(*_ESTIMATOR_DAS, "prune_horizon=0"),
    ),
    ("simulation settings", "simulation_settings", []),
]


def replace_block(text: str, name: str, content: str) -> str:
    """Replace what lies between the ``docs:NAME`` markers of ``text`` with ``content``.

    >>> replace_block("a\\n<!-- docs:x -->\\nold\\n<!-- /docs:x -->\\nb", "x", "new")
    'a\\n<!-- docs:x -->\\nnew\\n<!-- /docs:x -->\\nb'
    """
    pattern = re.compile(
        rf"(<!-- docs:{re.escape(name)} -->\n).*?(\n?<!-- /docs:{re.escape(name)} -->)", re.S
    )
    if not pattern.search(text):
        raise KeyError(f"no <!-- docs:{name} --> ... <!-- /docs:{name} --> block")
    return pattern.sub(
        lambda m: m.group(1) + content.rstrip("\n") + "\n" + m.group(2).lstrip("\n"), text, count=1
    )


class Docs:
    """The markdown files under ``root`` and where raw results go."""

    def __init__(self, root: Path, quick: bool) -> None:
        self.root, self.quick = root, quick
        self.results = root / ("results/docs-quick" if quick else "results/docs")
        self.img = root / "docs" / "img"
        self.img.mkdir(parents=True, exist_ok=True)

    def block(self, file: str, name: str, content: str) -> None:
        path = self.root / file
        path.write_text(replace_block(path.read_text(), name, content))

    def image(self, src: Path, name: str) -> None:
        shutil.copyfile(src, self.img / name)


def _quiet(fn: Callable[[], int]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = fn()
    return status, out.getvalue()


def _simulate(argv: list[str]) -> None:
    from simulations.__main__ import main as simulate

    status, text = _quiet(lambda: simulate([*argv, "--no-progress"]))
    if status != 0:
        raise RuntimeError(f"simulate {argv} failed:\n{text}")


def demo(docs: Docs) -> None:
    """The demo: README picture, result table and per-concept table of docs/experiments.md."""
    from simulations.__main__ import DEMO

    out = docs.results / "demo"
    t0 = time.perf_counter()
    _simulate(["-o", str(out)] + (["-n", "1800"] if docs.quick else []))
    seconds = time.perf_counter() - t0
    docs.image(out / "overview.png", "demo_complexity.png")
    summary = json.loads((out / "summary.json").read_text())
    table = (out / "results.md").read_text().split("\n\n", 2)[2].strip()
    n = summary["n_samples"]
    docs.block(
        "docs/experiments.md",
        "demo-table",
        "\n".join(
            [
                table,
                "",
                f"(`streamdas simulate`, {n:,} samples, seed {summary['seed']}; seconds = time in each "
                "learner's predict + learn, DAS's including the one-time cost of building its trainer; "
                f"the whole run took {seconds:.1f} s including plots. Hidden sizes after the last "
                'pruning are what the network kept; "now" adds the units grown at the last sizing '
                "cycle, which the parameter count includes.)",
            ]
        ),
    )
    names = ["2 centroids", "16 centroids", "2 centroids again"]
    lines = [
        "| learner | " + " | ".join(f"{c}: accuracy / units" for c in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for learner, entry in summary["learners"].items():
        cells = []
        for seg in entry["segments"]:
            acc = seg.get("accuracy_rolling_2nd_half")
            units = seg.get("mean_units_2nd_half")
            cells.append(f"{acc:.3f}" + (f" / {units:.1f}" if units is not None else ""))
        lines.append(f"| {learner} | " + " | ".join(cells) + " |")
    docs.block("docs/experiments.md", "demo-concepts", "\n".join(lines))
    assert DEMO["scenario"] == summary["scenario"]
    growth_check(docs)


def growth_check(docs: Docs) -> None:
    """``python -m simulations.growth``: DAS against static MLPs of its start and peak widths."""
    from simulations import growth
    from streamdas.threads import limit_threads

    seeds, n = ([0], 1800) if docs.quick else ([42, 1, 2], 18_000)
    with limit_threads():
        rows = growth.run(seeds, n)
    command = "python -m simulations.growth" + (f" --seeds 0 --n {n}" if docs.quick else "")
    docs.block("docs/experiments.md", "growth-check", growth.table(rows, n) + f"\n(`{command}`)")


def defaults(docs: Docs) -> None:
    """The three runs of "Why not the estimator's defaults?" and their table."""
    n = 3000 if docs.quick else 30_000
    step = n // 10
    rows = [
        f"| settings | command | total units after pruning every {step:,} samples (drifts at "
        f"{n // 3:,} and {2 * n // 3:,}) |",
        "|---|---|---|",
    ]
    for label, folder, extra in DEFAULTS_RUNS:
        out = docs.results / "defaults_evidence" / folder
        argv = ["complexity", "-n", str(n), "--learners", "das", *extra, "-o", str(out)]
        _simulate([*argv, "--no-plots"])
        metrics = pd.read_csv(out / "metrics.csv")
        das = metrics[metrics["learner"] == "das"].set_index("n_samples")["total_units"]
        units = [int(das.loc[k]) for k in range(step, n + 1, step) if k in das.index]
        shown = " ".join(f'"{a}"' if "(" in a else a for a in extra)
        command = (
            f"python -m simulations complexity -n {n} --learners das {shown} "
            f"-o results/defaults_evidence/{folder}"
        ).replace("  ", " ")
        rows.append(f"| {label} | `{command}` | {', '.join(map(str, units))} |")
    docs.block("docs/experiments.md", "defaults-evidence", "\n".join(rows))
    pruning_rule(docs)


def pruning_rule(docs: Docs) -> None:
    """``python -m benchmarks.pruning_rule``: the paper's pruning test against the averaged one."""
    from benchmarks.pruning_rule import main as run_rule

    argv = ["--n", "1000"] if docs.quick else []
    status, text = _quiet(lambda: run_rule(argv))
    if status != 0:
        raise RuntimeError(f"benchmarks.pruning_rule failed:\n{text}")
    command = " ".join(["python -m benchmarks.pruning_rule", *argv])
    docs.block("docs/experiments.md", "pruning-rule", f"{text.strip()}\n\n(`{command}`)")


PAPER_IMAGES = {
    "fig1": "fig1_sizes_vs_alpha.png",
    "fig2": "fig2_start_widths.png",
    "table1": "table1_sizes_vs_difficulty.png",
    "table23": "table23_baselines.png",
}


def paper(docs: Docs) -> None:
    """``python -m simulations.paper all``: each experiment's picture and table."""
    from simulations.paper import main as run_paper

    out = docs.results / "paper"
    status, text = _quiet(lambda: run_paper(["all", "-o", str(out)] + (["--quick"] if docs.quick else [])))
    if status != 0:
        raise RuntimeError(f"simulations.paper failed:\n{text}")
    for name, image in PAPER_IMAGES.items():
        docs.image(out / name / image, image)
        res = json.loads((out / name / "results.json").read_text())
        docs.block(
            "docs/experiments.md",
            f"paper-{name}",
            f"{res['table'].strip()}\n\n(`python -m simulations.paper {name}`: {res['seconds']} s.)",
        )


def bench_summary(sections: list) -> str:
    """The README's benchmark table, read from the report's sections (``not measured`` where
    a section did not run)."""
    by_key = {s.key: s for s in sections}
    missing = "not measured in this run"

    def row(key: str, match: Callable[[list], bool]) -> list | None:
        sec = by_key.get(key)
        return next((r for r in sec.rows if match(r)), None) if sec else None

    das = row("throughput", lambda r: str(r[0]).startswith("DASClassifier()"))
    mlp = row("throughput", lambda r: "(DAS final)" in str(r[0]))
    lines = ["| | measured | target |", "|---|---|---|"]
    if das:
        rate = float(das[1])
        met = "met" if rate >= 20_000 else "NOT met"
        lines.append(
            f"| prequential `DASClassifier()`, 10-feature stream | {rate:,.0f} samples/s "
            f"| >= 20,000 ({met}, {rate / 20_000:.2f}x) |"
        )
    else:
        lines.append(f"| prequential `DASClassifier()`, 10-feature stream | {missing} | >= 20,000 |")
    if das and mlp:
        ratio = float(das[1]) / float(mlp[1])
        lines.append(
            f"| against a per-sample torch MLP of the same size | {ratio:.1f}x | >= 10x "
            f"({'met' if ratio >= 10 else 'NOT met'}) |"
        )
    else:
        lines.append(f"| against a per-sample torch MLP of the same size | {missing} | >= 10x |")
    river = [
        r
        for r in (by_key["throughput"].rows if "throughput" in by_key else [])
        if str(r[0]).startswith("river ")
    ]
    lines.append(
        "| River in the same run | "
        + (
            " · ".join(f"{str(r[0])[6:]} {float(r[1]):,.0f}" for r in river) + " samples/s"
            if river
            else missing
        )
        + " | |"
    )
    loop = by_key.get("river_loop")
    if loop and loop.rows:
        das_loop, peers = loop.rows[0], loop.rows[1:]
        rate = float(das_loop[1])
        beside = " · ".join(f"{str(r[0]).removeprefix('river ')} {float(r[1]):,.0f}" for r in peers)
        lines.append(
            f"| `DASClassifier()` in River's `progressive_val_score` (SEA) | {rate:,.0f} samples/s "
            f"(beside: {beside}) | >= 20,000 ({'met' if rate >= 20_000 else 'NOT met'}) |"
        )
    else:
        lines.append(
            f"| `DASClassifier()` in River's `progressive_val_score` (SEA) | {missing} | >= 20,000 |"
        )
    sizing = row("sizing", lambda r: int(r[0]) == 1000)
    lines.append(
        "| grow + prune, share of learning time (N = 1,000) | "
        + (
            f"{float(sizing[5]):.1f}% | <= 5% ({'met' if float(sizing[5]) <= 5 else 'NOT met'}) |"
            if sizing
            else f"{missing} | <= 5% |"
        )
    )
    growth = None
    if "memory" in by_key:
        for note in by_key["memory"].notes:
            m = re.search(r"\): ([+-][\d.]+)%", note)
            if note.startswith("RSS growth") and m:
                growth = float(m.group(1))
    span = by_key["memory"].title.split("over ")[-1] if growth is not None else "a long run"
    lines.append(
        f"| RSS growth over {span} | "
        + (
            f"{growth:+.2f}% | <= 5% ({'met' if growth <= 5 else 'NOT met'}) |"
            if growth is not None
            else f"{missing} | <= 5% |"
        )
    )
    mini = row("minibatch", lambda r: int(r[0]) == 1024)
    lines.append(
        "| `predict_many` + `learn_many`, batch 1,024 | "
        + (f"{float(mini[3]):,.0f} samples/s | |" if mini else f"{missing} | |")
    )
    gpu = by_key.get("gpu")
    lines.append(
        "| GPU step, DAS / static | "
        + ("see docs/benchmarks.md, section 6" if gpu and gpu.rows else "not measured (no GPU was available)")
        + " | <= 1.15x |"
    )
    for kind, label in (
        ("accuracy", "accuracy goals, 8 drifting classification streams"),
        ("regression", "accuracy goals, 3 regression streams"),
    ):
        for issue in ("11", "22"):
            goals = [
                n for s in sections if s.key == kind for n in s.notes if n.startswith(f"Issue {issue} goals")
            ]
            verdict = goals[0].split(": ", 1)[1] if goals else missing
            if issue == "22" and goals:  # the means and goals; the worst seeds are in the table's note
                verdict = re.sub(r" \(worst seed [\d.]+\)", "", verdict)
            lines.append(f"| {label} (issue {issue}) | " + verdict.replace("|", "/") + " | |")
    startup = by_key.get("startup")
    for r in startup.rows if startup else []:
        lines.append(
            f"| {r[0]} first samples, fresh process: excess over a later one; RSS growth "
            f"over {int(r[1]):,} samples | {float(r[6]):.1f} ms; {float(r[10]):+.1f} MiB | "
            f"<= 50 ms ({'met' if float(r[6]) <= 50 else 'NOT met'}); <= 10 MiB "
            f"({'met' if float(r[10]) <= 10 else 'NOT met'}) |"
        )
    if not startup:
        lines.append(
            f"| first samples' cost and RSS growth, fresh process | {missing} | <= 50 ms; <= 10 MiB |"
        )
    return "\n".join(lines)


def bench(docs: Docs) -> None:
    """``python -m benchmarks``: the report in docs/benchmarks.md (headings one level down) and
    the README's summary table."""
    from benchmarks.__main__ import run_suite
    from benchmarks.common import setup_torch

    setup_torch(1)
    preset = "smoke" if docs.quick else "full"
    report, sections = run_suite(preset, ["sizing"] if docs.quick else None, progress=True)
    report = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", report, flags=re.M)
    docs.block("docs/benchmarks.md", "bench-report", report)
    docs.block("README.md", "bench-summary", bench_summary(sections))


#: ``benchmarks.scope``'s streams as docs/benchmarks.md names them.
SCOPE_STREAMS = {
    "rbf": "RandomRBFDrift, 4 classes, 10 features, 50 centroids moving 1e-4",
    "agrawal": "Agrawal 0 -> 2 (ConceptDriftStream, drift at the middle)",
    "rbf-fast": "RandomRBFDrift, centroids moving 1e-3 (fast)",
}
#: The shared-scope learner's target (labelled records/s on one core, defaults).
LEARNER_TARGET = 15_000


def learner_table(res: dict) -> str:
    """``benchmarks.learner``'s figures (:func:`service`'s ``learner.json``) as docs/benchmarks.md
    shows them: the table, then the target and the encodings."""
    plain, replayed = res["distinct"], res["replayed"]
    lines = [
        "| stream | records learned | learned records/s | by CPU time | decode + dedup only, values/s |",
        "|---|---|---|---|---|",
    ]
    for label, r, learned in (
        ("distinct records", plain, f"{plain['learned']:,}"),
        ("10% replayed", replayed, f"{replayed['learned']:,} + {replayed['duplicates']:,} skipped"),
    ):
        lines.append(
            f"| {label} | {learned} | {r['learn_rate']:,.0f} | {r['learn_rate_cpu']:,.0f} "
            f"| {r['decode_rate']:,.0f} |"
        )
    ratio = plain["learn_rate"] / LEARNER_TARGET
    lines += [
        "",
        f"Best of {res['repeats']}. Target: at least {LEARNER_TARGET:,} labelled records/s on "
        f"one core with the defaults: {'met' if ratio >= 1 else 'NOT met'} ({ratio:.1f}x). A "
        f"snapshot of that model ({res['snapshot_bytes'] / 1024:.0f} KiB) encodes in "
        f"{res['snapshot_s'] * 1000:.1f} ms, the full learner state in {res['full_s'] * 1000:.1f} ms.",
    ]
    return "\n".join(lines)


def scope_table(rows: list[dict]) -> str:
    """``benchmarks.scope --json``'s rows as docs/benchmarks.md shows them: the table, then how
    far each scope is from the ``learn_one`` loop."""
    lines = [
        "| stream | records | input partitions | `learn_one` loop | shared scope | partition scope "
        "| shared: snapshot behind (p50 / p99 records) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    previous = None
    for r in rows:
        shared, part = r["shared"], r["partition"]
        name = "same" if r["stream"] == previous else SCOPE_STREAMS.get(r["stream"], r["stream"])
        previous = r["stream"]
        acc = f"{shared['accuracy']:.1f}"
        behind = " / ".join(
            "n/a" if shared[k] is None else f"{shared[k]:,.0f}" for k in ("behind_p50", "behind_p99")
        )
        lines.append(
            f"| {name} | {r['records']:,} | {r['partitions']} | {r['reference']:.1f} | "
            f"{f'**{acc}**' if shared['accuracy'] >= part['accuracy'] else acc} | "
            f"{part['accuracy']:.1f} | {behind} |"
        )
    target = [r for r in rows if r["stream"] in ("rbf", "agrawal")]
    if target:
        counts = sorted({r["partitions"] for r in target})
        gaps = [
            max(r["reference"] - r["shared"]["accuracy"] for r in target if r["partitions"] == c)
            for c in counts
        ]
        losses = [r["reference"] - r["partition"]["accuracy"] for r in target]
        lines += [
            "",
            f"On the slow streams ({', '.join(sorted({r['stream'] for r in target}))}) the "
            f"shared scope is within {' and '.join(f'{g:.1f}' for g in gaps)} points of the "
            f"`learn_one` loop at {' and '.join(map(str, counts))} partitions, while the "
            f"partition scope loses {min(losses):.1f} to {max(losses):.1f} points (each of its "
            "models learns 1/P of the records).",
        ]
    return "\n".join(lines)


def _kib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 1024:.0f} KiB"


def load_table(reports: list[dict]) -> str:
    """``benchmarks.kafka_load --json`` reports of the shared scope (one per instance count) as
    docs/benchmarks.md shows them: the table, then whether the service kept up."""
    lines = [
        "| instances | predictions/s (steady) | max lag | snapshots published | behind (p50 / p99 "
        "records) | age (p50 / p99) | first use (p50 / p99) | snapshot | learner checkpoint |",
        "| ---: | --- | ---: | ---: | --- | --- | --- | ---: | ---: |",
    ]
    for r in reports:
        f = r["freshness"]
        behind = " / ".join(
            "n/a" if f["behind_records"][k] is None else f"{f['behind_records'][k]:,.0f}"
            for k in ("p50", "p99")
        )
        age, first = (
            " / ".join("n/a" if f[key].get(k) is None else f"{f[key][k]:.2f} s" for k in ("p50", "p99"))
            for key in ("age_s", "first_use_s")
        )
        lines.append(
            f"| {r['instances']} | {r['throughput_msgs_per_s']:,.0f} "
            f"({r['steady_msgs_per_s']:,.0f}) | {r['max_lag']:,.0f} | {f['snapshots']} | "
            f"{behind} | {age} | {first} | {_kib(f['snapshot_bytes'])} | "
            f"{_kib(f['checkpoint_bytes'])} |"
        )
    notes = []
    for r in reports:
        kept = r["steady_msgs_per_s"] >= 0.95 * r["rate_target"]
        complete = r["predictions_in_output_topic"] == r["messages"]
        notes.append(
            f"{r['instances']} instance{'s' if r['instances'] > 1 else ''}: "
            f"{'kept' if kept else 'did not keep'} up with {r['rate_target']:,.0f} records/s "
            f"offered; {r['predictions_in_output_topic']:,} of {r['messages']:,} records got a "
            f"prediction{'' if complete else ' (INCOMPLETE)'}; final lag {r['final_lag']:,.0f}."
        )
    return "\n".join([*lines, "", " ".join(notes)])


def service(docs: Docs) -> None:
    """The shared scope's benchmarks in docs/benchmarks.md: ``python -m benchmarks.learner``,
    ``python -m benchmarks.scope`` and ``python -m benchmarks.kafka_load`` (these two start
    Tansu, found as ``benchmarks.scope`` finds it)."""
    from benchmarks import kafka_load, scope
    from benchmarks.common import PRESETS, setup_torch
    from benchmarks.learner import _encodings, learner_rate

    out = docs.results / "service"
    out.mkdir(parents=True, exist_ok=True)
    setup_torch(1)
    sizes = PRESETS["smoke" if docs.quick else "full"]
    runs = {
        "distinct": learner_rate(sizes.throughput_n, sizes.repeats),
        "replayed": learner_rate(sizes.throughput_n, sizes.repeats, replay_every=1000),
    }
    snap_s, snap_b, full_s, full_b = _encodings(runs["distinct"]["state"], sizes.repeats)
    learner = {
        "repeats": sizes.repeats,
        "snapshot_s": snap_s,
        "snapshot_bytes": snap_b,
        "full_s": full_s,
        "full_bytes": full_b,
        **{k: {f: v for f, v in r.items() if f != "state"} for k, r in runs.items()},
    }
    (out / "learner.json").write_text(json.dumps(learner, indent=2))
    docs.block("docs/benchmarks.md", "service-learner", learner_table(learner))

    argv = ["--quick", "--n", "1000"] if docs.quick else []
    status, text = _quiet(
        lambda: scope.main([*argv, "--json", str(out / "scope.json"), "--workdir", str(out / "scope")])
    )
    if status != 0:
        raise RuntimeError(f"benchmarks.scope failed:\n{text}")
    docs.block(
        "docs/benchmarks.md", "service-scope", scope_table(json.loads((out / "scope.json").read_text()))
    )

    reports = []
    for instances in (1, 2):
        path = out / f"kafka_load_{instances}.json"
        argv = [
            "--messages",
            "3000" if docs.quick else "100000",
            "--rate",
            "2000" if docs.quick else "10000",
            "--instances",
            str(instances),
        ]
        status, text = _quiet(lambda a=[*argv, "--json", str(path)]: kafka_load.main(a))
        if status != 0:
            raise RuntimeError(f"benchmarks.kafka_load {argv} failed:\n{text}")
        reports.append(json.loads(path.read_text()))
    docs.block("docs/benchmarks.md", "service-load", load_table(reports))


PARTS: dict[str, Callable[[Docs], None]] = {
    "demo": demo,
    "defaults": defaults,
    "paper": paper,
    "bench": bench,
    "service": service,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make docs", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", choices=list(PARTS), help="regenerate only this part (repeatable)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes (a smoke test: its numbers mean nothing)"
    )
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="folder holding README.md and docs/ (default: this checkout)"
    )
    args = parser.parse_args(argv)
    from streamdas.threads import limit_threads

    docs = Docs(args.root.resolve(), args.quick)
    with limit_threads(1):
        for name in args.only or list(PARTS):
            t0 = time.perf_counter()
            print(f"[make docs] {name} ...", file=sys.stderr, flush=True)
            PARTS[name](docs)
            print(f"[make docs] {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
