"""A checkpoint loads a model that works, or raises CheckpointError before anything large is
allocated -- and the store then falls back to an older file.

Hostile states are crafted through the public save path (a real estimator's state from
``estimator_to_state``, changed, written by ``checkpoint.save``), so the file passes its
integrity check and the validation behind it is what is tested. Loads that could take the
whole machine's memory (or abort) on a weaker loader run in a subprocess with an address-space
limit.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import math
import os
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from kafka_fixtures import (
    ServiceProcess,
    create_topics,
    labelled_records,
    produce,
    read_topic,
    service_args,
)
from river import datasets, drift

from consumers.config import ServiceConfig
from consumers.model import ModelSpec, PartitionState, make_estimator, process_batch
from consumers.service import KafkaService
from consumers.store import CheckpointStore
from streamdas import CheckpointError, DASClassifier, DASRegressor, load_estimator, save_estimator
from streamdas import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]


def _trained(cls: type = DASClassifier, n: int = 60, **kw: Any) -> Any:
    model = cls(seed=3, grow_every=50, batch_size=8, batch_warmup=0, hidden_sizes=(8, 6), **kw)
    data = datasets.Phishing() if cls is DASClassifier else datasets.TrumpApproval()
    for x, y in data.take(n):
        model.learn_one(x, y)
    return model


@pytest.fixture(scope="module")
def payload() -> dict[str, Any]:
    """A trained classifier with a drift detector and a partly filled buffer, as plain data."""
    state = ckpt.estimator_to_state(_trained(n=61, drift_detector=drift.ADWIN()))
    state["extra"] = {}
    return state


def _write(payload: dict[str, Any], path: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    state = copy.deepcopy(payload)
    change(state)
    return ckpt.save(state, path)


def _reseal(body: bytes, path: Path) -> Path:
    """A file with the header of ``checkpoint.save`` around any ``body`` (an attacker can
    compute a checksum too: what follows the integrity check is what this exercises)."""
    header = struct.pack(f"<{len(ckpt.MAGIC)}sQ32s", ckpt.MAGIC, len(body), hashlib.sha256(body).digest())
    path.write_bytes(header + body)
    return path


_LOADER = r"""
import json, resource, sys
def peak_kib():  # the process's own peak (ru_maxrss would carry pytest's over the exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])
vsz = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (vsz + 2**31, resource.RLIM_INFINITY))
import torch
torch.set_num_threads(1)
from streamdas import CheckpointError, load_estimator
out = {}
for path in sys.argv[1:]:
    before = peak_kib()
    try:
        load_estimator(path)
        outcome = "loaded"
    except CheckpointError as exc:
        cause = exc.__cause__
        outcome = ("over-allocation: " if isinstance(cause, MemoryError) or "allocate" in str(exc)
                   else "CheckpointError: ") + str(exc)[-300:]
    except BaseException as exc:
        outcome = f"{type(exc).__name__}: {exc}"[:300]
    grew = (peak_kib() - before) / 1024
    out[path.rsplit("/", 1)[-1]] = [outcome, grew]
print(json.dumps(out))
"""


def _load_elsewhere(paths: list[Path]) -> dict[str, list[Any]]:
    """Load each file in one subprocess (2 GiB more address space than it starts with):
    ``{file name: [outcome, MiB the peak RSS grew by]}``; the subprocess must exit cleanly."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-c", _LOADER, *map(str, paths)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert run.returncode == 0, f"the loader died (exit {run.returncode}): {run.stderr[-2000:]}"
    return json.loads(run.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- integrity
def _data_offset(path: Path, entry_suffix: str) -> int:
    """File offset of the first byte of a zip entry's data (the zip starts at its first local
    header, after the checkpoint's own header if there is one)."""
    data = path.read_bytes()
    body_start = data.index(b"PK\x03\x04")
    body = data[body_start:]
    info = next(i for i in zipfile.ZipFile(io.BytesIO(body)).infolist() if i.filename.endswith(entry_suffix))
    n, m = struct.unpack("<HH", body[info.header_offset + 26 : info.header_offset + 30])
    return body_start + info.header_offset + 30 + n + m


def test_a_flipped_bit_in_tensor_data_is_caught(tmp_path: Path, payload: dict[str, Any]) -> None:
    """torch's zip reader checks no CRC: a bit flipped in the Adam state loaded silently."""
    path = ckpt.save(payload, tmp_path / "m.ckpt")
    good = path.read_bytes()
    load_estimator(path)  # the undamaged file loads
    names = [i.filename for i in zipfile.ZipFile(io.BytesIO(good[good.index(b"PK\x03\x04") :])).infolist()]
    storages = [n for n in names if "/data/" in n]
    for entry in storages:
        at = _data_offset(path, entry) + 1
        damaged = bytearray(good)
        damaged[at] ^= 0x10
        path.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError):
            load_estimator(path)
    step = max(1, len(good) // 97)
    for at in range(0, len(good), step):  # anywhere else too: header, pickle, zip directory
        damaged = bytearray(good)
        damaged[at] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError):
            load_estimator(path)


def test_files_without_the_header_load_and_their_crcs_are_checked(
    tmp_path: Path, payload: dict[str, Any]
) -> None:
    """Files written before the header (a bare torch zip) still load, fully validated; the
    zip's own CRC-32 then catches a flipped bit in an entry's data."""
    path = tmp_path / "old.ckpt"
    torch.save(payload, path)
    model, _ = load_estimator(path)
    assert model.classes == ckpt.estimator_from_state(payload).classes
    data = bytearray(path.read_bytes())
    body = zipfile.ZipFile(path)
    info = next(i for i in body.infolist() if i.filename.endswith("/data/2"))
    n, m = struct.unpack("<HH", bytes(data[info.header_offset + 26 : info.header_offset + 30]))
    data[info.header_offset + 30 + n + m + 3] ^= 0x04
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="CRC"):
        load_estimator(path)


def test_a_file_over_the_size_bound_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.ckpt"
    with path.open("wb") as f:
        f.truncate(300 * 2**20)  # sparse: no disk used
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="bytes, more than"):
            load_estimator(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20
    small = ckpt.save({"a": list(range(1000))}, tmp_path / "s.ckpt")
    with pytest.raises(CheckpointError, match="more than the 100"):
        ckpt.load(small, ckpt.Limits(max_bytes=100))


# ---------------------------------------------------------------------- finding 6: memory
def _stride0(payload: dict[str, Any], width: int) -> Callable[[dict[str, Any]], None]:
    """Declare ``width``-wide layers whose weights are zeros expanded to that shape: a few
    bytes on disk each, 2.5 GB each once copied into a network."""

    def change(state: dict[str, Any]) -> None:
        trainer = state["estimator"]["trainer"]
        trainer["net"]["hidden_sizes"] = [width, width]
        state["estimator"]["params"]["max_units"] = None
        n_in, n_out = trainer["net"]["n_inputs"], trainer["net"]["n_outputs"]
        shapes = {
            "hidden.0.weight": (width, n_in),
            "hidden.0.bias": (width,),
            "hidden.1.weight": (width, width),
            "hidden.1.bias": (width,),
            "output.weight": (n_out, width),
            "output.bias": (n_out,),
        }
        trainer["model"] = {k: torch.zeros(1).expand(*s) for k, s in shapes.items()}
        for holder in ("averages", "polyak"):
            trainer[holder] = {
                k: torch.zeros(1).expand(*s)
                for k, s in shapes.items()
                if holder == "polyak" or k.startswith("hidden")
            }
        for i, s in enumerate(shapes.values()):
            trainer["optimizer"]["state"][i] = {
                "step": torch.tensor(1.0),
                "exp_avg": torch.zeros(1).expand(*s),
                "exp_avg_sq": torch.zeros(1).expand(*s),
            }

    return change


def test_small_files_cannot_ask_for_large_memory(tmp_path: Path, payload: dict[str, Any]) -> None:
    files = [_write(payload, tmp_path / "stride0.ckpt", _stride0(payload, 25_000))]

    def meta(state: dict[str, Any]) -> None:
        _stride0(payload, 25_000)(state)
        model = state["estimator"]["trainer"]["model"]
        for k, v in model.items():
            model[k] = torch.empty(v.shape, device="meta")

    files.append(_write(payload, tmp_path / "meta.ckpt", meta))

    def untrained(state: dict[str, Any]) -> None:  # 2.2 KB; its first learning step built 9.2 GB
        state["estimator"]["trainer"] = None
        state["estimator"]["buffer_x"], state["estimator"]["buffer_y"] = [], []
        state["estimator"]["params"].update(hidden_sizes=[10_000, 10_000], max_units=None)

    files.append(_write(payload, tmp_path / "untrained.ckpt", untrained))

    def grows_large(state: dict[str, Any]) -> None:  # within the width bound, but not grown once
        untrained(state)
        state["estimator"]["params"].update(hidden_sizes=[4000, 4000], growth_percentage=1.0)

    files.append(_write(payload, tmp_path / "grows.ckpt", grows_large))

    # ``extra`` of five million zeros, deflated to a few kilobytes inside the zip
    big = copy.deepcopy(payload)
    big["extra"] = {"pad": [0] * 5_000_000}
    buffer = io.BytesIO()
    torch.save(big, buffer)
    plain_zip = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    deflated = io.BytesIO()
    with zipfile.ZipFile(deflated, "w") as out:
        for info in plain_zip.infolist():
            out.writestr(info.filename, plain_zip.read(info), compress_type=zipfile.ZIP_DEFLATED)
    files.append(_reseal(deflated.getvalue(), tmp_path / "deflated.ckpt"))
    files.append(_reseal(buffer.getvalue(), tmp_path / "bigpickle.ckpt"))
    assert (tmp_path / "deflated.ckpt").stat().st_size < 200_000

    results = _load_elsewhere(files)
    for name, (outcome, grew_mib) in results.items():
        assert outcome.startswith("CheckpointError"), (name, outcome)
        assert grew_mib < 300, (name, grew_mib, outcome)
    assert "contiguous" in results["stride0.ckpt"][0] or "exceed" in results["stride0.ckpt"][0]
    assert "10000" in results["untrained.ckpt"][0]
    assert "parameters" in results["grows.ckpt"][0]
    assert "compressed" in results["deflated.ckpt"][0]
    assert "pickle is" in results["bigpickle.ckpt"][0]


# ---------------------------------------------------------------------- finding 5: states
def _first_state(s: dict[str, Any]) -> dict[str, Any]:
    return s["estimator"]["trainer"]["optimizer"]["state"][0]


def _group(s: dict[str, Any]) -> dict[str, Any]:
    return s["estimator"]["trainer"]["optimizer"]["param_groups"][0]


def _weights(s: dict[str, Any]) -> dict[str, torch.Tensor]:
    return s["estimator"]["trainer"]["model"]


def _nan_at_first(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


BROKEN = {
    "renamed_adam_key": lambda s: _first_state(s).update(exp_avg_renamed=_first_state(s).pop("exp_avg")),
    "extra_adam_key": lambda s: _first_state(s).update(max_exp_avg_sq=_first_state(s)["exp_avg_sq"]),
    "nan_weight": lambda s: _weights(s).update(
        {"hidden.0.weight": _nan_at_first(_weights(s)["hidden.0.weight"])}
    ),
    "nan_exp_avg_sq": lambda s: _first_state(s).update(
        exp_avg_sq=_nan_at_first(_first_state(s)["exp_avg_sq"])
    ),
    "negative_exp_avg_sq": lambda s: _first_state(s).update(exp_avg_sq=-1 - _first_state(s)["exp_avg_sq"]),
    "inf_exp_avg": lambda s: _first_state(s).update(exp_avg=_first_state(s)["exp_avg"] + float("inf")),
    "float64_exp_avg": lambda s: _first_state(s).update(exp_avg=_first_state(s)["exp_avg"].double()),
    "negative_step": lambda s: _first_state(s).update(step=torch.tensor(-3.0)),
    "fractional_step": lambda s: _first_state(s).update(step=torch.tensor(2.5)),
    "step_beyond_steps": lambda s: _first_state(s).update(step=torch.tensor(1e6)),
    "nan_lr": lambda s: _group(s).update(lr=float("nan")),
    "huge_lr": lambda s: _group(s).update(lr=1e30),
    "text_lr": lambda s: _group(s).update(lr="abc"),
    "tensor_lr": lambda s: _group(s).update(lr=torch.tensor(0.01)),
    "bad_betas": lambda s: _group(s).update(betas=(1.5, 0.999)),
    "one_beta": lambda s: _group(s).update(betas=(0.9,)),
    "zero_eps": lambda s: _group(s).update(eps=0.0),
    "negative_weight_decay": lambda s: _group(s).update(weight_decay=-0.1),
    "amsgrad_on": lambda s: _group(s).update(amsgrad=True),
    "renamed_group_key": lambda s: _group(s).update(learning_rate=_group(s).pop("lr")),
    "two_groups": lambda s: s["estimator"]["trainer"]["optimizer"]["param_groups"].append(dict(_group(s))),
    "huge_lr_param": lambda s: s["estimator"]["params"].update(lr=1e30),
    "huge_train_lr": lambda s: s["estimator"]["trainer"]["train"].update(lr=1e30),
    "meta_device": lambda s: s["estimator"]["params"].update(device="meta"),
    "sparse_weight": lambda s: _weights(s).update({"output.bias": _weights(s)["output.bias"].to_sparse()}),
    "meta_weight": lambda s: _weights(s).update(
        {"output.bias": torch.empty(_weights(s)["output.bias"].shape, device="meta")}
    ),
    "stride0_weight": lambda s: _weights(s).update(
        {"hidden.0.weight": torch.zeros(1).expand(*_weights(s)["hidden.0.weight"].shape)}
    ),
    "transposed_weight": lambda s: _weights(s).update(
        {"hidden.1.weight": torch.zeros(tuple(reversed(_weights(s)["hidden.1.weight"].shape))).t()}
    ),
    "float64_weight": lambda s: _weights(s).update({"output.bias": _weights(s)["output.bias"].double()}),
    "nan_polyak": lambda s: s["estimator"]["trainer"]["polyak"].update(
        {"output.bias": _nan_at_first(s["estimator"]["trainer"]["polyak"]["output.bias"])}
    ),
    "nan_sizer_average": lambda s: s["estimator"]["trainer"]["averages"].update(
        {"hidden.0.bias": _nan_at_first(s["estimator"]["trainer"]["averages"]["hidden.0.bias"])}
    ),
    "huge_standardizer_mean": lambda s: s["estimator"]["stats"]["mean"].__setitem__(0, 1e300),
    "inf_buffered_row": lambda s: s["estimator"]["buffer_x"].__setitem__(
        0, s["estimator"]["buffer_x"][0] + float("inf")
    ),
    "rng_wrong_size": lambda s: s["estimator"]["trainer"].update(rng=torch.zeros(7, dtype=torch.uint8)),
    "counter_text": lambda s: s["estimator"]["trainer"]["counters"].update(n_steps="9"),
    "started_not_bool": lambda s: s["estimator"]["trainer"]["counters"].update(started="no"),
    "extra_tensor": lambda s: s["extra"].update(t=torch.zeros(3)),
    "extra_nested": lambda s: s["extra"].update(deep=[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]),
    "extra_nan": lambda s: s["extra"].update(at=float("nan")),
    "huge_history_limit": lambda s: s["estimator"]["trainer"].update(history_limit=2**70),
    "unknown_history_event": lambda s: s["estimator"]["trainer"]["history"][0].update(event="boom"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_states_that_loaded_broken_are_refused(tmp_path: Path, payload: dict[str, Any], name: str) -> None:
    path = _write(payload, tmp_path / f"{name}.ckpt", BROKEN[name])
    with pytest.raises(CheckpointError):
        load_estimator(path)


def test_a_renamed_adam_key_is_an_error_at_load_not_at_the_first_learn(
    tmp_path: Path, payload: dict[str, Any]
) -> None:
    path = _write(payload, tmp_path / "m.ckpt", BROKEN["renamed_adam_key"])
    with pytest.raises(CheckpointError, match="optimizer state 0 has keys"):
        load_estimator(path)


def test_the_undamaged_state_loads_and_keeps_learning(tmp_path: Path, payload: dict[str, Any]) -> None:
    model, _ = load_estimator(ckpt.save(payload, tmp_path / "m.ckpt"))
    for x, y in datasets.Phishing().take(40):
        model.learn_one(x, y)
    assert model.n_samples_learned > 56


@pytest.mark.parametrize("cls", [DASClassifier, DASRegressor])
def test_an_untrained_estimator_within_bounds_loads(tmp_path: Path, cls: type) -> None:
    model = cls(hidden_sizes=(16,), batch_size=4, batch_warmup=0, seed=1)
    model.learn_one({"a": 1.0}, 1)
    loaded, _ = load_estimator(save_estimator(model, tmp_path / "m.ckpt"))
    assert loaded.n_samples_buffered == 1 and loaded.trainer is None


# ---------------------------------------------------------------------- finding 4: detectors
HOSTILE_DETECTOR_PARAMS = {
    "adwin_max_buckets": ("ADWIN", {"max_buckets": 10**12}),  # aborted the process natively
    "adwin_clock_0": ("ADWIN", {"clock": 0}),  # pyo3 PanicException (BaseException)
    "adwin_max_buckets_0": ("ADWIN", {"max_buckets": 0}),  # panics at the first update
    "adwin_delta": ("ADWIN", {"delta": 5.0}),
    "adwin_clock_bool": ("ADWIN", {"clock": True}),
    "kswin_window": ("KSWIN", {"window_size": 10**9, "stat_size": 30}),
    "kswin_stat_size": ("KSWIN", {"window_size": 50, "stat_size": 50}),
    "kswin_window_values": ("KSWIN", {"window": [1e300] * 3}),
    "page_hinkley_mode": ("PageHinkley", {"mode": "sideways"}),
    "page_hinkley_alpha": ("PageHinkley", {"alpha": 0.0}),
    "dummy_t0": ("DummyDriftDetector", {"t_0": 0}),
}


def test_detector_parameters_are_range_checked_and_panics_contained(
    tmp_path: Path, payload: dict[str, Any]
) -> None:
    files = []
    for name, (cls, params) in HOSTILE_DETECTOR_PARAMS.items():

        def change(state: dict[str, Any], cls: str = cls, params: dict = params) -> None:
            state["estimator"]["params"]["drift_detector"] = {"class": cls, "params": params}

        files.append(_write(payload, tmp_path / f"{name}.ckpt", change))
    results = _load_elsewhere(files)
    assert set(results) == {f"{n}.ckpt" for n in HOSTILE_DETECTOR_PARAMS}
    for name, (outcome, _) in results.items():
        assert outcome.startswith("CheckpointError"), (name, outcome)


def test_a_native_panic_is_contained() -> None:
    """pyo3's PanicException derives from BaseException: ``except Exception`` misses it."""

    def panic() -> None:
        detector = drift.ADWIN(max_buckets=0)  # valid in River's eyes; panics in Rust
        detector.update(0.5)

    with pytest.raises(BaseException) as caught:
        panic()
    assert not isinstance(caught.value, Exception)
    with pytest.raises(CheckpointError, match="PanicException"):
        ckpt.guarded(panic, "trial")
    with pytest.raises(KeyboardInterrupt):
        ckpt.guarded(lambda: (_ for _ in ()).throw(KeyboardInterrupt), "trial")


# ---------------------------------------------------------------------- the store
def _records(n: int, start: int = 0) -> list[bytes]:
    return [
        json.dumps({"x": {"a": (i % 7) / 7, "b": (i % 3) - 1.0}, "y": i % 2, "id": i}).encode()
        for i in range(start, start + n)
    ]


def _state(n: int = 40, **params: Any) -> PartitionState:
    state = PartitionState(make_estimator(ModelSpec(params={"hidden_sizes": [8], **params}, seed=1)))
    process_batch(state, _records(n))
    state.next_offset = n
    return state


def test_store_falls_back_when_the_trial_step_panics(tmp_path: Path, monkeypatch, caplog) -> None:
    """A checkpoint whose first learning step panics natively (a detector parameter the rules
    did not know to be harmful) is skipped for the older one, and nothing escapes."""
    rules = dict(ckpt.DETECTOR_PARAMS["ADWIN"], max_buckets=ckpt.integer(0, 1000))
    monkeypatch.setitem(ckpt.DETECTOR_PARAMS, "ADWIN", rules)
    fallbacks: list[str] = []
    store = CheckpointStore(tmp_path, on_fallback=fallbacks.append)
    store.save("in", 0, _state(40))
    newer = _state(80, drift_detector=drift.ADWIN(max_buckets=0), batch_size=4)
    store.save("in", 0, newer)
    with caplog.at_level(logging.ERROR, logger="consumers.store"):
        loaded = store.load("in", 0)
    assert loaded is not None and loaded.state.next_offset == 40
    assert fallbacks == ["older"]
    assert any("PanicException" in r.getMessage() for r in caplog.records)


def test_store_falls_back_when_the_trial_prediction_is_not_finite(tmp_path: Path, monkeypatch) -> None:
    store = CheckpointStore(tmp_path)
    store.save("in", 0, _state(40))
    monkeypatch.setattr(DASClassifier, "predict_proba_one", lambda self, x: {0: math.nan, 1: math.nan})
    assert store.load("in", 0) is None


def test_stale_temp_files_are_removed_at_start_and_before_a_save(tmp_path: Path, caplog) -> None:
    store = CheckpointStore(tmp_path)
    store.save("in", 0, _state(40, hidden_sizes=[4]))
    folder = store.folder("in", 0)
    stale = folder / f".{40:020d}.ckpt.k1ll3d.tmp"  # what a save killed midway leaves
    fresh = folder / f".{80:020d}.ckpt.1npr0g.tmp"  # possibly another replica's save right now
    stale.write_bytes(b"half a checkpoint")
    fresh.write_bytes(b"being written")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    with caplog.at_level(logging.WARNING, logger="consumers.store"):
        CheckpointStore(tmp_path)
    assert not stale.exists() and fresh.exists()
    assert any(stale.name in r.getMessage() for r in caplog.records)
    os.utime(fresh, (old, old))
    store.save("in", 0, _state(60, hidden_sizes=[4]))
    assert not fresh.exists()
    assert sorted(p.name for p in folder.iterdir()) == [f"{40:020d}.ckpt", f"{60:020d}.ckpt"]


def test_a_model_beyond_the_limits_is_reported_when_it_is_saved(tmp_path: Path, caplog) -> None:
    small = CheckpointStore(tmp_path, limits=ckpt.Limits(max_parameters=50))
    with caplog.at_level(logging.ERROR, logger="consumers.store"):
        small.save("in", 0, _state(40))
    assert any("will be refused at load" in r.getMessage() for r in caplog.records)
    assert small.load("in", 0) is None
    assert CheckpointStore(tmp_path).load("in", 0) is not None


def test_parameter_mismatch_is_logged_with_both_values(tmp_path: Path, caplog) -> None:
    """The checkpoint's architecture is kept; the hyperparameters that may change while
    learning take the configured values; each difference is logged with both."""
    from kafka import TopicPartition

    cfg = ServiceConfig(
        checkpoint_dir=str(tmp_path / "ckpt"),
        model_scope="partition",
        model_params={"hidden_sizes": [16], "lr": 0.05, "batch_size": 16},
    )
    CheckpointStore(cfg.checkpoint_dir).save("in", 0, _state(40, lr=0.01))
    service = KafkaService(cfg)
    service.consumer = type("C", (), {"seek": lambda self, tp, offset: None})()
    with caplog.at_level(logging.WARNING, logger="consumers.store"):
        service._assign({TopicPartition("in", 0)})
    model = service.states[TopicPartition("in", 0)].estimator
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "hidden_sizes is [8] in the checkpoint and [16] in the configuration; using the "
        "checkpoint's value" in m
        for m in messages
    ), messages
    assert any(
        "lr is 0.01 in the checkpoint and 0.05 in the configuration; using the configured value" in m
        for m in messages
    ), messages
    assert not any("batch_size" in m for m in messages)  # equal: nothing to say
    assert model.layer_sizes[0] != 16 and model.lr == 0.05
    assert model.trainer.optimizer.param_groups[0]["lr"] == 0.05


# ---------------------------------------------------------------------- the real service
@pytest.mark.integration
def test_service_on_tansu_survives_a_detector_that_aborted_it(tansu, tmp_path: Path) -> None:
    """The newest checkpoint names ``ADWIN(max_buckets=10**12)``: the service aborted in the
    store's load (exit 134) at every start. Now it falls back to the older checkpoint and
    predicts every record after it."""
    bs = tansu.bootstrap
    create_topics(bs, {"in": 1, "out": 1, "dlq": 1})
    produce(bs, "in", labelled_records(200))
    store = CheckpointStore(tmp_path / "ckpt")
    good = PartitionState(make_estimator(ModelSpec(params={"hidden_sizes": [8]}, seed=42)))
    process_batch(good, labelled_records(100))
    good.next_offset = 100
    older = store.save("in", 0, good)
    payload = ckpt.load(older)
    payload["estimator"]["params"]["drift_detector"] = {"class": "ADWIN", "params": {"max_buckets": 10**12}}
    payload["extra"]["offsets"] = {"in:0": 150}
    ckpt.save(payload, store.folder("in", 0) / f"{150:020d}.ckpt")

    service = ServiceProcess(service_args(bs, tmp_path), tmp_path / "service.log")
    try:
        preds = read_topic(bs, "out", lambda r: {p["offset"] for p in r} >= set(range(100, 200)), timeout=90)
        assert service.alive(), service.log()[-3000:]
    finally:
        service.signal(15)
        service.wait(timeout=30)
        log = service.log()
        service.stop()
    offsets = sorted(p["offset"] for p in preds)
    assert offsets[0] == 100 and set(offsets) >= set(range(100, 200)), log[-3000:]
    assert "checkpoint fallback" in log and "max_buckets" in log
