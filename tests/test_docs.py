"""Docs that cannot drift.

* ``make docs`` (``scripts/make_docs.py``) rewrites every generated block of README.md and docs/
  and every picture they show (checked on a copy, at ``--quick`` sizes).
* The commands written in README.md and docs/ run as written (short forms: fewer samples, a
  temporary output folder); commands that need a broker or take minutes have their flags
  checked against the command's own parser.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _make_docs():
    spec = importlib.util.spec_from_file_location("make_docs", ROOT / "scripts" / "make_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_make_docs_regenerates_every_block_and_picture(tmp_path: Path) -> None:
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    block = re.compile(r"(<!-- docs:([\w-]+) -->\n).*?(<!-- /docs:\2 -->)", re.S)
    names = []
    for path in [tmp_path / "README.md", *(tmp_path / "docs").glob("*.md")]:
        text = path.read_text()
        names += [m.group(2) for m in block.finditer(text)]
        path.write_text(block.sub(lambda m: m.group(1) + "STALE\n" + m.group(3), text))
    assert len(names) >= 8 and len(set(names)) == len(names)
    pictures = sorted(
        {img for path in DOCS for img in re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", path.read_text())}
    )
    assert pictures
    shutil.rmtree(tmp_path / "docs" / "img")
    with contextlib.redirect_stdout(io.StringIO()):
        assert _make_docs().main(["--quick", "--root", str(tmp_path)]) == 0
    for path in [tmp_path / "README.md", *(tmp_path / "docs").glob("*.md")]:
        assert "STALE" not in path.read_text(), path.name
    for img in pictures:  # relative to README.md or to docs/
        assert (tmp_path / img).exists() or (tmp_path / "docs" / img).exists(), img
    # what it wrote is this run's: the demo table says how many samples it ran
    assert "1,800 samples" in (tmp_path / "docs" / "experiments.md").read_text()
    assert (tmp_path / "results" / "docs-quick" / "demo" / "summary.json").exists()


def _documented_commands() -> list[tuple[str, str]]:
    """``(file, command)`` for every ``streamdas ...`` / ``python -m ...`` command written in a
    code block or in backticks, without placeholders, comments or pipes."""
    found: list[tuple[str, str]] = []
    for path in DOCS:
        text = path.read_text()
        candidates = []
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
            candidates += block.replace("\\\n", " ").splitlines()
        candidates += re.findall(r"`((?:streamdas|python -m) [^`]+)`", text)
        for line in candidates:
            line = line.split(" #")[0].strip()
            if "|" in line or "&" in line:
                line = line.split("|")[-1].split("&")[0].strip()
            if not line.startswith(("streamdas ", "python -m ")) and line != "streamdas":
                continue
            if "..." in line or re.search(r"\[|\bSCENARIO\b|\bNAME\b|\bFILE\b|\bDIR\b", line):
                continue
            found.append((path.name, line))
    return sorted(set(found))


COMMANDS = _documented_commands()


def _help(argv_prefix: list[str]) -> str:
    """The --help text of a documented module (``python -m MODULE``)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        module = importlib.import_module(argv_prefix[2])
        if not hasattr(module, "main"):  # a package: python -m runs its __main__
            module = importlib.import_module(argv_prefix[2] + ".__main__")
        module.main(["--help"])
    assert exc.value.code == 0
    return out.getvalue()


def test_the_docs_document_commands() -> None:
    files = {f for f, _ in COMMANDS}
    assert {"README.md", "experiments.md", "service.md", "benchmarks.md"} <= files
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_documented_command_runs(where: str, command: str, tmp_path: Path) -> None:
    from consumers.__main__ import main as consume
    from consumers.config import check_config, load_config
    from simulations.__main__ import main as simulate
    from simulations.paper import build_parser as paper_parser

    words = shlex.split(command)
    if words[0] == "streamdas":
        words = [
            "python",
            "-m",
            {"simulate": "simulations", "consume": "consumers", "bench": "benchmarks", "info": "info"}.get(
                words[1] if len(words) > 1 else "", "simulations"
            ),
            *words[2:],
        ]
    module, args = words[2], words[3:]
    quiet = contextlib.redirect_stdout(io.StringIO())
    if "--help" in args:
        assert _help(words[:3]).startswith("usage:")
    elif module == "simulations":
        short = (
            args
            if "--list" in args
            else [*args, "-n", "600", "--no-plots", "--no-progress", "-o", str(tmp_path / "sim")]
        )
        with quiet:
            assert simulate(short) == 0
    elif module == "simulations.paper":
        parsed = paper_parser().parse_args(args)  # the runs themselves: the make-docs test
        assert parsed.experiment
    elif module == "consumers":
        if "--source" in args:
            short = [*args, "--limit", "50", "--log-level", "WARNING"]
            if "--output" in short:
                short[short.index("--output") + 1] = str(tmp_path / "out.jsonl")
            else:
                short += ["--output", str(tmp_path / "out.jsonl")]
            if "--dead-letter-output" in short:
                short[short.index("--dead-letter-output") + 1] = str(tmp_path / "dead.jsonl")
            if "-" in short[short.index("--source") + 1 : short.index("--source") + 2]:
                short[short.index("--source") + 1] = "river:SEA"
            with quiet:
                assert consume(short) == 0
            assert (tmp_path / "out.jsonl").read_text().count("\n") == 50
        else:  # a broker's flags: parsed and checked, not run
            check_config(load_config(args, env={}))
    elif module == "info":
        from streamdas.cli import main as streamdas_main

        with quiet:
            assert streamdas_main(["info", *args]) == 0
    else:  # benchmarks and their standalone scripts: every flag is one the parser knows
        help_text = _help(["python", "-m", module])
        for flag in (a.split("=")[0] for a in args if a.startswith("--")):
            assert flag in help_text, (module, flag)


@pytest.mark.integration
def test_make_docs_service_part_fills_its_blocks(
    tansu_binary: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--only service`` runs the learner, scope and load benchmarks (tiny sizes, on Tansu) and
    rewrites their three blocks of docs/benchmarks.md."""
    monkeypatch.setenv("TANSU", tansu_binary)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    path = tmp_path / "docs" / "benchmarks.md"
    names = ["service-learner", "service-scope", "service-load"]
    block = re.compile(r"(<!-- docs:(service-[\w-]+) -->\n).*?(<!-- /docs:\2 -->)", re.S)
    assert sorted(m.group(2) for m in block.finditer(path.read_text())) == sorted(names)
    path.write_text(block.sub(lambda m: m.group(1) + "STALE\n" + m.group(3), path.read_text()))
    with contextlib.redirect_stdout(io.StringIO()):
        assert _make_docs().main(["--quick", "--only", "service", "--root", str(tmp_path)]) == 0
    text = path.read_text()
    assert "STALE" not in text
    # what it wrote is this run's: the quick sizes
    assert "| distinct records | 300 |" in text
    assert "| RandomRBFDrift, 4 classes, 10 features, 50 centroids moving 1e-4 | 1,000 | 4 |" in text
    assert "3,000 of 3,000 records got a prediction" in text
