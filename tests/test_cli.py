"""The command line as a newcomer meets it: bad flags, values, environment variables and output
paths are one-line messages on stderr with exit status 2 (argparse's convention), never
tracebacks, and are caught before any work starts; ``--version``; every subcommand's help; a
live pipe into ``streamdas consume --source -`` gets each prediction back as its record arrives.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
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
    (["consume", "--model-param", "max_units=5000"], "--model-param", "max_units"),
    (["consume", "--checkpoint-every", "abc"], "--checkpoint-every", "an integer"),
    (["consume", "--limit", "-1"], "--limit", ">= 1"),
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
def test_bad_flag_is_one_line_naming_it_exit_2(
    argv: list[str], flag: str, accepted: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1, err  # one line: no usage block above it
    assert "error:" in err and flag in err and accepted in err, err


def test_bad_flag_from_the_installed_command_has_no_traceback(tmp_path: Path) -> None:
    """The real process: exit status 2, one line on stderr, nothing on stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", "streamdas.cli", "consume", "--source", "sim:nope"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "argument --source" in proc.stderr


#: (id, argv, environment, the flag or variable the one-line message must name). In argv and
#: environment, {tmp} is a scratch folder, {file} a file in it, {busy} a port in use.
WRONG = [
    ("metrics port too large", ["consume", "--metrics-port", "99999"], {}, "--metrics-port"),
    ("metrics port negative", ["consume", "--metrics-port", "-1"], {}, "--metrics-port"),
    (
        "metrics port in use",
        [
            "consume",
            "--source",
            "river:SEA",
            "--limit",
            "3",
            "--model",
            "linear",
            "--output",
            "{tmp}/out.jsonl",
            "--metrics-port",
            "{busy}",
        ],
        {},
        "--metrics-port",
    ),
    (
        "metrics address not this host's",
        [
            "consume",
            "--source",
            "river:SEA",
            "--limit",
            "3",
            "--model",
            "linear",
            "--output",
            "{tmp}/out.jsonl",
            "--metrics-address",
            "192.0.2.1",
            "--metrics-port",
            "0",
        ],
        {},
        "--metrics-port",
    ),
    ("log level unknown", ["consume", "--log-level", "LOUD"], {}, "--log-level"),
    (
        "output folder missing",
        ["consume", "--source", "river:SEA", "--output", "/nonexistent/dir/x.jsonl"],
        {},
        "--output",
    ),
    ("output is a folder", ["consume", "--source", "river:SEA", "--output", "{tmp}"], {}, "--output"),
    (
        "dead-letter output in /proc",
        ["consume", "--source", "river:SEA", "--dead-letter-output", "/proc/nope/x.jsonl"],
        {},
        "--dead-letter-output",
    ),
    (
        "checkpoint dir in /proc",
        ["consume", "--model-scope", "partition", "--checkpoint-dir", "/proc/nope"],
        {},
        "--checkpoint-dir",
    ),
    (
        "checkpoint dir is a file",
        ["consume", "--model-scope", "partition", "--checkpoint-dir", "{file}"],
        {},
        "--checkpoint-dir",
    ),
    ("model scope unknown", ["consume", "--model-scope", "global"], {}, "--model-scope"),
    ("group id making no topic name", ["consume", "--group-id", "my group"], {}, "--train-topic"),
    (
        "train topic is the input topic",
        ["consume", "--topics", "in", "--train-topic", "in"],
        {},
        "--train-topic",
    ),
    ("limit zero", ["consume", "--source", "river:SEA", "--limit", "0"], {}, "--limit"),
    ("stall seconds zero", ["consume", "--stall-seconds", "0"], {}, "--stall-seconds"),
    ("checkpoint interval nan", ["consume", "--checkpoint-interval-s", "nan"], {}, "--checkpoint-interval-s"),
    ("flush timeout overflows", ["consume", "--flush-timeout-s", "1e300"], {}, "--flush-timeout-s"),
    (
        "session timeout not an integer",
        ["consume", "--session-timeout-ms", "1e3"],
        {},
        "--session-timeout-ms",
    ),
    (
        "heartbeat above session",
        ["consume", "--heartbeat-interval-ms", "50000"],
        {},
        "--heartbeat-interval-ms",
    ),
    (
        "request timeout above idle limit",
        ["consume", "--request-timeout-ms", "600000"],
        {},
        "--request-timeout-ms",
    ),
    (
        "bootstrap port not a number",
        ["consume", "--bootstrap-servers", "host:abc"],
        {},
        "--bootstrap-servers",
    ),
    ("bootstrap empty entry", ["consume", "--bootstrap-servers", "a:9092,"], {}, "--bootstrap-servers"),
    ("topic name", ["consume", "--topics", "bad/topic"], {}, "--topics"),
    ("output topic empty", ["consume", "--output-topic", ""], {}, "--output-topic"),
    ("features empty", ["consume", "--features", ","], {}, "--features"),
    ("features twice", ["consume", "--features", "a,a"], {}, "--features"),
    ("offset reset", ["consume", "--auto-offset-reset", "newest"], {}, "--auto-offset-reset"),
    ("seed negative", ["consume", "--seed", "-1"], {}, "--seed"),
    ("torch threads zero", ["consume", "--torch-threads", "0"], {}, "--torch-threads"),
    ("kafka option the service sets", ["consume", "--kafka", "group_id=x"], {}, "--kafka"),
    ("kafka option unknown", ["consume", "--kafka", "sasl_plain_passwrd=x"], {}, "--kafka"),
    ("kafka option without name", ["consume", "--kafka", "=1"], {}, "--kafka"),
    ("config consume not a table", ["consume", "--config", "{tmp}/scalar.toml"], {}, "scalar.toml"),
    ("config not UTF-8", ["consume", "--config", "{tmp}/latin1.toml"], {}, "--config"),
    ("env metrics port", ["consume"], {"STREAMDAS_METRICS_PORT": "99999"}, "STREAMDAS_METRICS_PORT"),
    ("env log level", ["consume"], {"STREAMDAS_LOG_LEVEL": "LOUD"}, "STREAMDAS_LOG_LEVEL"),
    ("env limit", ["consume", "--source", "river:SEA"], {"STREAMDAS_LIMIT": "0"}, "STREAMDAS_LIMIT"),
    ("env kafka without name", ["consume"], {"STREAMDAS_KAFKA_": "1"}, "STREAMDAS_KAFKA_"),
    ("env threads", ["consume"], {"STREAMDAS_THREADS": "abc"}, "STREAMDAS_THREADS"),
    ("simulate length zero", ["simulate", "-n", "0"], {}, "--length"),
    ("simulate length too short", ["simulate", "-n", "5"], {}, "--length"),
    ("simulate output in /proc", ["simulate", "-o", "/proc/nope"], {}, "--output"),
    ("simulate output is a file", ["simulate", "-o", "{file}"], {}, "--output"),
    ("simulate window zero", ["simulate", "--window", "0"], {}, "--window"),
    ("simulate eval-every zero", ["simulate", "--eval-every", "0"], {}, "--eval-every"),
    ("simulate threads zero", ["simulate", "--threads", "0"], {}, "--threads"),
    ("simulate seed negative", ["simulate", "--seed", "-1"], {}, "--seed"),
    ("simulate flag unknown", ["simulate", "--nosuch"], {}, "--nosuch"),
    ("bench repeats zero", ["bench", "--repeats", "0"], {}, "--repeats"),
    ("bench threads zero", ["bench", "--threads", "0"], {}, "--threads"),
    ("bench out in /proc", ["bench", "--out", "/proc/nope/report.md"], {}, "--out"),
    ("bench out is a folder", ["bench", "--out", "{tmp}"], {}, "--out"),
    ("info extra argument", ["info", "extra"], {}, "extra"),
    ("unknown command", ["nosuch"], {}, "nosuch"),
]

#: Right command lines next to the wrong ones: the checks refuse only what cannot work.
RIGHT = [
    (
        "embedded run with metrics",
        [
            "consume",
            "--source",
            "river:SEA",
            "--limit",
            "3",
            "--model",
            "linear",
            "--output",
            "{tmp}/new.jsonl",
            "--metrics-port",
            "0",
            "--log-level",
            "warning",
        ],
        {},
    ),
    (
        "embedded run, settings from the environment",
        ["consume", "--source", "sim:sea_abrupt", "--output", "{tmp}/env.jsonl"],
        {
            "STREAMDAS_LIMIT": "4",
            "STREAMDAS_MODEL": "linear",
            "STREAMDAS_LOG_LEVEL": "ERROR",
            "STREAMDAS_METRICS_PORT": "0",
            "STREAMDAS_THREADS": "1",
        },
    ),
    ("simulate list", ["simulate", "--list"], {}),
]


def _fill(text: str, tmp: Path, busy: int) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{file}", str(tmp / "a-file")).replace("{busy}", str(busy))


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every WRONG and RIGHT command line, run as real processes by tests/cli_runner.py (one
    interpreter forks them all), from a scratch folder so nothing lands in the checkout."""
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "a-file").write_text("not a folder\n")
    (tmp / "scalar.toml").write_text("consume = 5\n")
    (tmp / "latin1.toml").write_bytes('group_id = "caf\u00e9"\n'.encode("latin-1"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = [
            {
                "argv": [_fill(a, tmp, port) for a in argv],
                "env": {k: _fill(v, tmp, port) for k, v in env.items()},
                "timeout_s": 60,
            }
            for _, argv, env, *_ in WRONG + RIGHT
        ]
        proc = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "cli_runner.py")],
            input=json.dumps(cases),
            capture_output=True,
            text=True,
            timeout=60 * len(cases),
            cwd=tmp,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    return {"tmp": tmp, **{case[0]: result for case, result in zip(WRONG + RIGHT, results, strict=True)}}


@pytest.mark.parametrize(("name", "flag"), [(w[0], w[3]) for w in WRONG], ids=[w[0] for w in WRONG])
def test_a_wrong_argument_is_one_line_on_stderr_with_status_2(
    name: str, flag: str, cli_runs: dict[str, dict]
) -> None:
    """The process exits with status 2 and one line, ``streamdas...: error: ...`` naming what is
    wrong, before any work (a run that went ahead would be killed at 60 s: status None)."""
    run = cli_runs[name]
    err = run["stderr"]
    assert run["status"] == 2, (run["status"], err[-2000:])
    assert "Traceback" not in err and run["stdout"] == "", err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("streamdas") and ": error: " in err and flag in err, err


@pytest.mark.parametrize("name", [r[0] for r in RIGHT], ids=[r[0] for r in RIGHT])
def test_a_right_command_line_still_runs(name: str, cli_runs: dict[str, dict]) -> None:
    run = cli_runs[name]
    assert run["status"] == 0, run["stderr"][-2000:]
    assert "Traceback" not in run["stderr"]
    outputs = {
        "embedded run with metrics": ("new.jsonl", 3),
        "embedded run, settings from the environment": ("env.jsonl", 4),
    }
    if name in outputs:
        file, lines = outputs[name]
        assert len((cli_runs["tmp"] / file).read_text().splitlines()) == lines


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"streamdas {__version__}"


@pytest.mark.parametrize("command", ["simulate", "consume", "bench", "info"])
def test_every_subcommand_has_help_under_its_own_name(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
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
        [
            sys.executable,
            "-m",
            "streamdas.cli",
            "consume",
            "--source",
            "-",
            "--model-param",
            "hidden_sizes=[8]",
            "--log-level",
            "WARNING",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
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
        [
            sys.executable,
            "-m",
            "streamdas.cli",
            "consume",
            "--source",
            "-",
            "--model",
            "linear",
            "--log-level",
            "WARNING",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
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
