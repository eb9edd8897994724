"""The command line as a newcomer meets it: bad flags and values are one-line messages with exit
status 2 (argparse's convention), never tracebacks; ``--version``; every subcommand's help; a
live pipe into ``streamdas consume --source -`` gets each prediction back as its record arrives.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streamdas import __version__
from streamdas.cli import main

ROOT = Path(__file__).resolve().parents[1]

#: (argv, the flag the message must name, a word of the accepted forms it must give)
BAD = [
    (["consume", "--source", "nosuch.jsonl"], "--source", "river:NAME"),
    (["consume", "--source", "sim:nope"], "--source", "sim:sea_abrupt"),
    (["consume", "--source", "river:Nope"], "--source", "river:SEA"),
    (["consume", "--model-param", "lr=abc"], "--model-param", "a number"),
    (["consume", "--model-param", "nosuch=1"], "--model-param", "alpha"),
    (["consume", "--model-param", "hidden_sizes=[0]"], "--model-param", "hidden_sizes"),
    (["consume", "--model-param", "lr"], "--model-param", "NAME=VALUE"),
    (["consume", "--checkpoint-every", "abc"], "--checkpoint-every", "an integer"),
    (["consume", "--limit", "-1"], "--limit", ">= 0"),
    (["consume", "--task", "ranking"], "--task", "regression"),
    (["consume", "--model", "tree"], "--model", "linear"),
    (["consume", "--kafka", "oops"], "--kafka", "NAME=VALUE"),
    (["consume", "--config", "/nonexistent/streamdas.toml"], "--config", "cannot read"),
    (["simulate", "--das", "alpha=abc"], "--das", "a number"),
    (["simulate", "--das", "nosuch=1"], "--das", "tau"),
    (["simulate", "--das", "tau=-1"], "--das", "tau"),
    (["simulate", "--das", "alpha"], "--das", "KEY=VALUE"),
    (["simulate", "nosuch"], "scenario", "sea_abrupt"),
    (["simulate", "--learners", "das,xgboost"], "--learners", "hat"),
    (["simulate", "-n", "abc"], "--length", "int"),
    (["bench", "--only", "nosuch"], "--only", "throughput"),
    (["nosuch"], "command", "simulate"),
]


@pytest.mark.parametrize(("argv", "flag", "accepted"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_flag_is_one_line_naming_it_exit_2(argv: list[str], flag: str, accepted: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # argparse's own errors print the usage above it
    assert "error:" in last and flag in last and accepted in last, last


def test_bad_flag_from_the_installed_command_has_no_traceback(tmp_path: Path) -> None:
    """The real process: exit status 2, one line on stderr, nothing on stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", "streamdas.cli", "consume", "--source", "sim:nope"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "argument --source" in proc.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"streamdas {__version__}"


@pytest.mark.parametrize("command", ["simulate", "consume", "bench", "info"])
def test_every_subcommand_has_help_under_its_own_name(command: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: streamdas {command}"), out[:80]
    assert "python -m" not in out.splitlines()[0]


def _record(i: int) -> bytes:
    return json.dumps({"x": {"a": i % 3, "b": 1.5}, "y": i % 2, "id": i}).encode() + b"\n"


def test_live_pipe_gets_each_prediction_as_its_record_arrives() -> None:
    """A writer sending one record a second over a pipe that stays open gets each prediction
    back before it sends the next (bounds generous for a loaded 2-core machine; before the fix
    nothing came out until the end of input)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamdas.cli", "consume", "--source", "-", "--model-param",
         "hidden_sizes=[8]", "--log-level", "WARNING"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdin is not None and proc.stdout is not None
    lines: queue.Queue[bytes] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True)
    reader.start()
    try:
        waits = []
        for i in range(4):
            if i:
                time.sleep(1.0)  # one record a second
            proc.stdin.write(_record(i))
            proc.stdin.flush()
            t0 = time.monotonic()
            # the first answer may wait for the process to start (imports); later ones may not
            line = lines.get(timeout=90 if i == 0 else 10)
            waits.append(time.monotonic() - t0)
            assert json.loads(line)["id"] == i
            assert proc.poll() is None  # the pipe is still open: no end of input yet
        assert max(waits[1:]) < 10
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        assert lines.empty()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_on_a_live_pipe_exits_cleanly_with_predictions_flushed() -> None:
    """SIGTERM while the writer keeps the pipe open is a graceful shutdown: exit status 0, no
    "Fatal Python error" (before the fix the reader thread, blocked in a buffered stdin read,
    aborted interpreter shutdown with status 134), and every prediction made is in the output."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamdas.cli", "consume", "--source", "-", "--model", "linear",
         "--log-level", "WARNING"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    lines: queue.Queue[bytes] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True)
    reader.start()
    try:
        for i in range(3):
            proc.stdin.write(_record(i))
            proc.stdin.flush()
            assert json.loads(lines.get(timeout=90))["id"] == i
        assert proc.poll() is None  # the pipe is still open; the reader waits for more
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=60)
        err = proc.stderr.read().decode()
        assert status == 0, err
        assert "Fatal Python error" not in err and "Traceback" not in err, err
        reader.join(timeout=10)
        assert lines.empty()  # nothing beyond the three predictions, none lost before them
    finally:
        proc.stdin.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
