"""Fuzzing the checkpoint loader: over a thousand damaged or crafted files, each either loads a
model that predicts and learns or raises :class:`~streamdas.CheckpointError` -- nothing else,
never an abort, never more than 1 GiB of memory -- and no load writes, deletes or runs anything
outside the worker's temporary folder.

The files are mutations of real checkpoints of both estimators: of the unpickled state,
re-saved through the public save path so the integrity check passes (bit flips in tensors,
truncated lists, renamed and deleted keys, wrong dtypes, stride-0, meta, sparse and transposed
tensors, NaN, huge sizes, hostile drift detectors), of the file's bytes (flips, truncation,
garbage), and of the torch archive and its pickle under a valid checksum. They are loaded in
two worker subprocesses, several hundred each, under an address-space limit (an over-allocation
fails instead of taking the machine); a worker that dies is a finding.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import random
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

N_WORKERS = 2
N_PER_WORKER = 520  # mutations each: 1,040 in all
REPO = Path(__file__).resolve().parents[1]
MAX_RSS_MIB = 1024


def _valid(cls: type) -> tuple[Any, tuple[dict, Any]]:
    from river import datasets, drift

    from streamdas import DASClassifier

    model = cls(seed=5, hidden_sizes=(6, 5), grow_every=40, batch_size=8, drift_detector=drift.ADWIN())
    data = datasets.Phishing() if cls is DASClassifier else datasets.TrumpApproval()
    rows = list(data.take(134))
    for x, y in rows[:133]:  # 133: a partly filled buffer is saved too
        model.learn_one(x, y)
    return model, rows[133]


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
    {"class": "ADWIN", "params": {"max_buckets": 10**12}},
    {"class": "ADWIN", "params": {"clock": 0}},
    {"class": "ADWIN", "params": {"max_buckets": 0}},
    {"class": "ADWIN", "params": {"clock": "32"}},
    {"class": "KSWIN", "params": {"window_size": -5}},
    {"class": "KSWIN", "params": {"window_size": 10**9, "stat_size": 3}},
    {"class": "PageHinkley", "params": {"threshold": 0.0, "mode": "x"}},
    {"class": "DummyDriftDetector", "params": {"t_0": 0}},
    {"class": "NoDrift", "params": {"x": 1}},
    {"class": "PageHinkley.__init__", "params": {}},
    ["ADWIN"],
]


def _tensor_variant(rng: random.Random, old: torch.Tensor) -> Any:
    """A tensor like ``old`` with one thing wrong (or nothing, sometimes)."""
    shape = tuple(old.shape)
    options = [
        lambda: old.double(),
        lambda: old.half(),
        lambda: old.long(),
        lambda: old.bool(),
        lambda: torch.zeros(1, dtype=old.dtype).expand(*shape) if old.dim() else old,
        lambda: torch.zeros(1).expand(10**5, 10**5),
        lambda: torch.empty(shape, device="meta"),
        lambda: torch.empty((10**6, 10**6), device="meta"),
        lambda: old.to_sparse() if old.dim() else old,
        lambda: old.t() if old.dim() == 2 else old.reshape(-1),
        lambda: old.reshape(-1),
        lambda: old.unsqueeze(0),
        lambda: old[..., :1],
        lambda: torch.full_like(old, float("nan")) if old.is_floating_point() else old,
        lambda: torch.full_like(old, float("inf")) if old.is_floating_point() else old,
        lambda: -old - 1 if old.is_floating_point() else old,
        lambda: old * 1e30 if old.is_floating_point() else old,
        lambda: torch.nn.Parameter(old.float()) if old.is_floating_point() else old,
        lambda: torch.zeros(0),
    ]
    if old.numel() and old.dtype in (torch.float32, torch.uint8):

        def flipped() -> torch.Tensor:  # one bit of one element
            t = old.clone().contiguous()
            raw = t.view(torch.uint8).view(-1)
            raw[rng.randrange(raw.numel())] ^= 1 << rng.randrange(8)
            return t

        options += [flipped] * 4
    return rng.choice(options)()


def _replacement(rng: random.Random, old: Any) -> Any:
    if isinstance(old, torch.Tensor) and rng.random() < 0.8:
        return _tensor_variant(rng, old)
    pool = [
        None,
        "x",
        "",
        -1,
        0,
        10**12,
        2**70,
        1e308,
        -1e308,
        float("nan"),
        float("inf"),
        True,
        [],
        {},
        [1, "a"],
        {"a": 1},
        torch.zeros(0),
        torch.zeros(3, 3),
        torch.ones(2, dtype=torch.int64),
        "ADWIN",
        0.5,
        [10**9, 10**9],
        "meta",
        "x" * 100_000,
        [[[[[[[[1]]]]]]]] * 10,
    ]
    if isinstance(old, (int, float)) and not isinstance(old, bool):
        pool += [old * 1000, -old, old + 1, old + 0.5, float(old) if isinstance(old, int) else int(old)]
    if isinstance(old, list):
        pool += [old + old, old[:-1], old[: len(old) // 2], old[::-1], old * 50]
    if isinstance(old, str):
        pool += [old + "_", old.upper(), old[:-1]]
    return rng.choice(pool)


def _mutate(rng: random.Random, payload: dict) -> dict:
    payload = copy.deepcopy(payload)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        paths = [p for p in _paths(payload) if p]
        path = rng.choice(paths)
        parent, key = _get(payload, path[:-1]), path[-1]
        action = rng.random()
        try:  # an earlier mutation may have replaced a container the next one aims into
            if action < 0.10 and isinstance(parent, dict):
                del parent[key]
            elif action < 0.18 and isinstance(parent, dict):  # a renamed key
                value = parent.pop(key)
                parent[f"{key}_" if isinstance(key, str) else key + 1] = value
            elif action < 0.22 and isinstance(parent, dict):
                parent[rng.choice(["extra", "__class__", "module", "das_average", "max_exp_avg_sq"])] = 1
            elif action < 0.30:
                payload["estimator"]["params"]["drift_detector"] = rng.choice(HOSTILE_DETECTORS)
            elif action < 0.36:
                trainer = payload["estimator"]["trainer"]
                target = trainer["net"] if rng.random() < 0.7 else payload["estimator"]["params"]
                target[rng.choice(["hidden_sizes", "n_inputs", "n_outputs", "max_units"])] = rng.choice(
                    [[10**9, 10**9], 10**9, [2**62], -3, [0], [25_000, 25_000], None, [4000] * 8]
                )
            elif action < 0.42:  # huge or NaN hyperparameters in the optimizer's group
                group = payload["estimator"]["trainer"]["optimizer"]["param_groups"][0]
                group[rng.choice(["lr", "betas", "eps", "weight_decay", "amsgrad", "fused"])] = rng.choice(
                    [float("nan"), 1e30, "abc", -1.0, (1.5, 0.9), (0.9,), 0.0, None, True]
                )
            elif action < 0.48:  # the same for the optimizer's per-parameter state
                state = payload["estimator"]["trainer"]["optimizer"]["state"]
                entry = state[rng.choice(list(state))]
                k = rng.choice(list(entry))
                entry[k] = _tensor_variant(rng, entry[k])
            elif action < 0.52 and isinstance(payload.get("extra"), dict):
                payload["extra"][rng.choice(["a", "offsets"])] = rng.choice(
                    [torch.zeros(2), float("nan"), [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]], {1.5: 2}, 2**80]
                )
            else:
                parent[key] = _replacement(rng, parent[key])
        except (TypeError, KeyError, IndexError, ValueError, RuntimeError):
            continue
    return payload


def _reseal(body: bytes) -> bytes:
    """``body`` behind a valid header: what follows the integrity check gets the bytes."""
    from streamdas import checkpoint as ckpt

    return (
        struct.pack(f"<{len(ckpt.MAGIC)}sQ32s", ckpt.MAGIC, len(body), hashlib.sha256(body).digest()) + body
    )


def _damage(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    kind = rng.random()
    if kind < 0.3:
        return bytes(data[: rng.randrange(len(data))])
    if kind < 0.7:
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind < 0.85:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    return rng.randbytes(rng.randint(0, 4096))


def _damage_pickle(rng: random.Random, body: bytes) -> bytes:
    """Rewrite the torch zip with its pickle (or another entry) damaged, stored entries kept."""
    source = zipfile.ZipFile(io.BytesIO(body))
    infos = source.infolist()
    pickle = next(i for i in infos if i.filename.endswith("data.pkl"))
    victim = pickle if rng.random() < 0.6 else rng.choice(infos)
    compress = zipfile.ZIP_DEFLATED if rng.random() < 0.1 else zipfile.ZIP_STORED
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in infos:
            data = source.read(info)
            if info is victim:
                data = _damage(rng, data) if rng.random() < 0.8 else data * rng.randint(2, 4)
            target.writestr(info.filename, data, compress_type=compress)
    return out.getvalue()


def _worker(base: Path, seed: int, n: int, out: Path) -> None:
    """Load ``n`` mutations of the checkpoints in ``base`` and write what happened to ``out``."""
    import resource

    vsz = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vsz + 2**31, resource.RLIM_INFINITY))
    torch.set_num_threads(1)
    from streamdas import CheckpointError, load_estimator
    from streamdas import checkpoint as ckpt

    root = base / f"worker{seed}"
    root.mkdir()
    violations: list[tuple[str, str]] = []
    watching = [False]
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    events = (
        "os.system",
        "subprocess.Popen",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.remove",
        "os.unlink",
        "os.rename",
        "os.rmdir",
        "shutil.rmtree",
        "os.chmod",
        "os.truncate",
        "socket.connect",
        "ctypes.dlopen",
    )

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if not watching[0]:
            return
        if event.startswith(events):
            violations.append((event, repr(args)[:200]))
        elif event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            if (
                (isinstance(mode, str) and any(c in mode for c in "wax+"))
                or (isinstance(flags, int) and flags & writes)
            ) and not os.fsdecode(args[0]).startswith(str(root)):
                violations.append((event, repr(args)[:200]))

    sys.addaudithook(audit)
    rng = random.Random(seed)
    cases = []
    for name in ("DASClassifier", "DASRegressor"):
        path = base / f"{name}.ckpt"
        probe = json.loads((base / f"{name}.probe.json").read_text())
        cases.append((path, ckpt.load(path), path.read_bytes(), probe))
        load_estimator(path)  # torch's one-time imports (which probe the temp folder) happen here
    counts = {"loaded": 0, "refused": 0}
    findings: list[dict[str, Any]] = []
    for i in range(n):
        _, payload, raw, (x, y) = cases[i % 2]
        kind = rng.choices(["state", "bytes", "archive"], weights=[6, 2, 2])[0]
        path = root / f"m{i}.ckpt"
        if kind == "state":
            ckpt.save(_mutate(rng, payload), path)
        elif kind == "bytes":
            path.write_bytes(_damage(rng, raw))
        else:
            path.write_bytes(_reseal(_damage_pickle(rng, raw[raw.index(b"PK\x03\x04") :])))
        watching[0] = True
        try:
            model, _ = load_estimator(path)
            model.predict_one(x)
            model.learn_one(x, y)
            model.predict_one(x)
            counts["loaded"] += 1
        except CheckpointError as exc:
            counts["refused"] += 1
            if isinstance(exc.__cause__, MemoryError) or "allocate" in str(exc):
                findings.append({"case": i, "kind": kind, "error": f"over-allocation: {exc}"[:500]})
        except BaseException as exc:  # a finding: a load must raise CheckpointError and only that
            findings.append({"case": i, "kind": kind, "error": f"{type(exc).__name__}: {exc}"[:500]})
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            watching[0] = False
        path.unlink()
    # VmHWM, the worker's own peak: ru_maxrss would carry pytest's peak over the exec.
    status = Path("/proc/self/status").read_text().splitlines()
    peak = int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) / 1024
    out.write_text(
        json.dumps({"counts": counts, "findings": findings, "violations": violations, "peak_rss_mib": peak})
    )


def test_fuzzed_checkpoints_load_or_raise_checkpoint_error(tmp_path: Path) -> None:
    from streamdas import DASClassifier, DASRegressor, save_estimator

    for cls in (DASClassifier, DASRegressor):
        model, probe = _valid(cls)
        save_estimator(model, tmp_path / f"{cls.__name__}.ckpt")
        (tmp_path / f"{cls.__name__}.probe.json").write_text(json.dumps(probe))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, str(tmp_path), str(seed), str(N_PER_WORKER)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for seed in range(N_WORKERS)
    ]
    reports = []
    for seed, worker in enumerate(workers):
        output, _ = worker.communicate(timeout=600)
        assert worker.returncode == 0, f"worker {seed} died ({worker.returncode}): {output[-3000:]!r}"
        reports.append(json.loads((tmp_path / f"report{seed}.json").read_text()))
    for report in reports:
        assert report["findings"] == [], report["findings"][:5]
        assert report["violations"] == []
        assert report["peak_rss_mib"] < MAX_RSS_MIB, report["peak_rss_mib"]
    loaded = sum(r["counts"]["loaded"] for r in reports)
    refused = sum(r["counts"]["refused"] for r in reports)
    assert loaded > 0 and refused > 0, (loaded, refused)  # both paths exercised
    assert loaded + refused == N_WORKERS * N_PER_WORKER >= 1000


if __name__ == "__main__":
    folder, seed, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    _worker(folder, seed, count, folder / f"report{seed}.json")
