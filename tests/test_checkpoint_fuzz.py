"""Fuzzing the checkpoint loader: a few hundred damaged or crafted files, each either loads a
model that predicts or raises :class:`~streamdas.CheckpointError` -- nothing else -- and no load
writes, deletes or runs anything outside the test's temporary folder."""

from __future__ import annotations

import copy
import os
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from river import datasets, drift

from streamdas import CheckpointError, DASClassifier, DASRegressor, load_estimator, save_estimator
from streamdas import checkpoint as ckpt

N_STRUCTURED = 240  # mutations of the payload, re-saved as valid torch files
N_BYTES = 90  # mutations of the file's bytes

_WATCH = {"active": False, "root": "", "violations": []}
_EXEC_EVENTS = ("os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn",
                "os.fork", "os.remove", "os.unlink", "os.rename", "os.rmdir", "shutil.rmtree",
                "os.chmod", "os.truncate", "socket.connect", "ctypes.dlopen")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _WATCH["active"]:
        return
    if event.startswith(_EXEC_EVENTS):
        _WATCH["violations"].append((event, repr(args)[:200]))
    elif event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path, mode, flags = args[0], args[1], args[2] if len(args) > 2 else 0
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS)
        if writes and not os.fsdecode(path).startswith(_WATCH["root"]):
            _WATCH["violations"].append((event, repr(args)[:200]))


sys.addaudithook(_audit)  # audit hooks cannot be removed: it only acts inside _watched()


@contextmanager
def _watched(root: Path) -> Iterator[list]:
    _WATCH.update(active=True, root=str(root), violations=[])
    try:
        yield _WATCH["violations"]
    finally:
        _WATCH["active"] = False


def _valid(cls: type) -> tuple[Any, dict]:
    model = cls(seed=5, hidden_sizes=(6, 5), grow_every=40, batch_size=8,
                drift_detector=drift.ADWIN())
    data = datasets.Phishing() if cls is DASClassifier else datasets.TrumpApproval()
    for x, y in data.take(133):  # 133: a partly filled buffer is saved too
        model.learn_one(x, y)
    probe = next(iter(data.take(1)))[0]
    return model, probe


def _paths(obj: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path to a value inside nested dicts and lists."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


HOSTILE_DETECTORS = [
    {"module": "river.datasets.base", "class": "os.system", "params": {"command": "touch /tmp/x"}},
    {"module": "builtins", "class": "eval", "params": {"source": "1"}},
    {"class": "ADWIN", "params": {"delta": [1e308] * 10}},
    {"class": "KSWIN", "params": {"window_size": -5}},
    {"class": "ADWIN", "params": {"clock": "32"}},
    {"class": "NoDrift", "params": {"x": 1}},
    {"class": "PageHinkley.__init__", "params": {}},
    ["ADWIN"],
]


def _replacement(rng: random.Random, old: Any) -> Any:
    pool = [None, "x", "", -1, 0, 10**12, 10**9, 1e308, -1e308, float("nan"), float("inf"), True,
            [], {}, [1, "a"], {"a": 1}, torch.zeros(0), torch.zeros(3, 3), torch.ones(2, dtype=torch.int64),
            "ADWIN", 0.5, [10**9, 10**9]]
    if isinstance(old, torch.Tensor) and old.dim() > 0 and old.numel():
        pool += [old.clone().reshape(-1), old.double(), old.t() if old.dim() == 2 else old[:-1],
                 old[..., :1], old.unsqueeze(0), torch.zeros_like(old)]
        if old.is_floating_point():
            pool.append(torch.full_like(old, float("nan")))
    if isinstance(old, (int, float)) and not isinstance(old, bool):
        pool += [old * 1000, -old, old + 1]
    if isinstance(old, list):
        pool += [old + old, old[:-1], old[::-1]]
    return rng.choice(pool)


def _mutate(rng: random.Random, payload: dict) -> dict:
    payload = copy.deepcopy(payload)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        paths = [p for p in _paths(payload) if p]
        path = rng.choice(paths)
        parent, key = _get(payload, path[:-1]), path[-1]
        action = rng.random()
        try:  # an earlier mutation may have replaced a container the next one aims into
            if action < 0.15 and isinstance(parent, dict):
                del parent[key]
            elif action < 0.25 and isinstance(parent, dict):
                parent[rng.choice(["extra", "__class__", "module",
                                   key + "_" if isinstance(key, str) else 1])] = 1
            elif action < 0.35:
                payload["estimator"]["params"]["drift_detector"] = rng.choice(HOSTILE_DETECTORS)
            elif action < 0.42:
                net = payload["estimator"]["trainer"]["net"]
                net[rng.choice(["hidden_sizes", "n_inputs", "n_outputs"])] = rng.choice(
                    [[10**9, 10**9], 10**9, [2**62], -3, [0]])
            else:
                parent[key] = _replacement(rng, parent[key])
        except (TypeError, KeyError, IndexError):
            continue
    return payload


def _check(path: Path, probe: dict, outcomes: dict) -> None:
    try:
        model, _ = load_estimator(path)
    except CheckpointError:
        outcomes["refused"] += 1
        return
    model.predict_one(probe)  # loaded: it must predict
    outcomes["loaded"] += 1


@pytest.mark.parametrize("cls", [DASClassifier, DASRegressor])
def test_fuzzed_checkpoints_load_or_raise_checkpoint_error(tmp_path: Path, cls: type) -> None:
    rng = random.Random(14)
    model, probe = _valid(cls)
    good = save_estimator(model, tmp_path / "good.ckpt")
    payload = ckpt.load(good)
    raw = good.read_bytes()
    outcomes = {"loaded": 0, "refused": 0}
    with _watched(tmp_path) as violations:
        for i in range(N_STRUCTURED // 2):
            path = tmp_path / f"s{i}.ckpt"
            _WATCH["active"] = False  # writing the test's own file is not the loader's doing
            ckpt.save(_mutate(rng, payload), path)
            _WATCH["active"] = True
            _check(path, probe, outcomes)
        for i in range(N_BYTES // 2):
            data = bytearray(raw)
            kind = rng.random()
            if kind < 0.4:
                data = data[: rng.randrange(len(data))]
            elif kind < 0.8:
                for _ in range(rng.randint(1, 20)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            else:
                data = bytearray(rng.randbytes(rng.randint(0, 4096)))
            path = tmp_path / f"b{i}.ckpt"
            _WATCH["active"] = False
            path.write_bytes(bytes(data))
            _WATCH["active"] = True
            _check(path, probe, outcomes)
    assert violations == []
    assert outcomes["refused"] > 0 and outcomes["loaded"] > 0, outcomes  # both paths exercised
    assert sum(outcomes.values()) == (N_STRUCTURED + N_BYTES) // 2
