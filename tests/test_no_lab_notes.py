"""Docstrings and comments of the library and the service say what and why: no timings, no "we measured", no
issue numbers (measurements live in docs/benchmarks.md, which ``make docs`` regenerates)."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAB_NOTE = re.compile(
    r"\bwe (?:measured|saw|found|tried)\b"
    r"|\bissues? #?\d+"
    r"|\b\d+(?:\.\d+)? ?(?:ns|us|µs|ms)\b"
    r"|\b\d+(?:\.\d+)?x (?:faster|slower)\b",
    re.IGNORECASE,
)


def _notes(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every comment and string in ``source`` that reads as a lab note."""
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING):
            for match in LAB_NOTE.finditer(tok.string):
                line = tok.start[0] + tok.string[: match.start()].count("\n")
                found.append((line, match.group(0)))
    return found


def test_the_checker_finds_lab_notes() -> None:
    source = (
        '"""Fast: 2.5x faster (issue 11)."""\n'
        "x = 1  # we measured 41 us a step\n"
        'y = "took 0.8 ms"\n'
        "z = 2  # one step per 8 samples, 3e-5, grow_every=1000\n"
    )
    assert [n for _, n in _notes(source)] == ["2.5x faster", "issue 11", "we measured", "41 us", "0.8 ms"]


@pytest.mark.parametrize(
    "path",
    sorted([*(ROOT / "streamdas").rglob("*.py"), *(ROOT / "consumers").rglob("*.py")]),
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_no_lab_notes_in_the_library(path: Path) -> None:
    assert _notes(path.read_text()) == []
