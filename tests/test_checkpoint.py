"""Checkpoints: round trips predict identically; damaged files raise and never half-load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from river import datasets, drift

from streamdas import CheckpointError, DASClassifier, DASRegressor, load_estimator, save_estimator
from streamdas import checkpoint as ckpt


def _trained(cls=DASClassifier, n: int = 300, **kw):
    model = cls(seed=3, grow_every=100, batch_size=8, **kw)
    data = datasets.Phishing() if cls is DASClassifier else datasets.TrumpApproval()
    for x, y in data.take(n):
        model.learn_one(x, y)
    return model


@pytest.mark.parametrize("cls", [DASClassifier, DASRegressor])
def test_round_trip_predicts_identically_and_resumes(tmp_path: Path, cls):
    model = _trained(cls, drift_detector=drift.ADWIN())
    path = save_estimator(model, tmp_path / "m.ckpt", extra={"offsets": {"t-0": 42}})
    loaded, extra = load_estimator(path)
    assert extra == {"offsets": {"t-0": 42}}
    assert loaded.layer_sizes == model.layer_sizes
    assert loaded.size_history == model.size_history
    assert loaded.n_samples_learned == model.n_samples_learned
    data = datasets.Phishing() if cls is DASClassifier else datasets.TrumpApproval()
    rows = list(data.take(400))[300:]
    method = "predict_proba_one" if cls is DASClassifier else "predict_one"
    for x, _ in rows[:20]:
        assert getattr(loaded, method)(x) == getattr(model, method)(x)
    for x, y in rows:  # both continue identically (optimizer and sizer state restored)
        model.learn_one(x, y)
        loaded.learn_one(x, y)
    assert loaded.size_history == model.size_history
    x = rows[-1][0]
    assert getattr(loaded, method)(x) == getattr(model, method)(x)


def test_checkpoint_is_loaded_with_weights_only(tmp_path: Path, monkeypatch):
    seen = {}
    real = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    save_estimator(_trained(n=20), tmp_path / "m.ckpt")
    load_estimator(tmp_path / "m.ckpt")
    assert seen.get("weights_only") is True


def test_truncated_and_garbage_files_raise(tmp_path: Path):
    path = save_estimator(_trained(n=50), tmp_path / "m.ckpt")
    data = path.read_bytes()
    for i, damaged in enumerate([data[: len(data) // 2], data[:10], b"", b"\x00" * 64, b"PK\x03\x04garbage"]):
        p = tmp_path / f"bad{i}.ckpt"
        p.write_bytes(damaged)
        with pytest.raises(CheckpointError):
            load_estimator(p)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_estimator(tmp_path / "missing.ckpt")


def test_incompatible_payloads_raise_clear_errors(tmp_path: Path):
    ckpt.save({"format": "something-else"}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a streamdas estimator"):
        load_estimator(tmp_path / "other.ckpt")

    model = _trained(n=50)
    payload = {
        "format": ckpt.ESTIMATOR_FORMAT,
        "class": "DASClassifier",
        "estimator": model.to_state(),
        "extra": {},
    }
    # Weights that do not fit the stated architecture.
    w = payload["estimator"]["trainer"]["model"]["hidden.0.weight"]
    payload["estimator"]["trainer"]["model"]["hidden.0.weight"] = torch.zeros(w.shape[0] + 1, w.shape[1])
    ckpt.save(payload, tmp_path / "shapes.ckpt")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_estimator(tmp_path / "shapes.ckpt")

    payload = {
        "format": ckpt.ESTIMATOR_FORMAT,
        "class": "DASClassifier",
        "estimator": model.to_state(),
        "extra": {},
    }
    opt = payload["estimator"]["trainer"]["optimizer"]
    first = next(iter(opt["state"].values()))
    first["exp_avg"] = torch.zeros(3, 3)
    ckpt.save(payload, tmp_path / "opt.ckpt")
    with pytest.raises(CheckpointError, match="optimizer state"):
        load_estimator(tmp_path / "opt.ckpt")

    ckpt.save({"format": ckpt.ESTIMATOR_FORMAT, "class": "Nope", "estimator": {}}, tmp_path / "c.ckpt")
    with pytest.raises(CheckpointError, match="unknown estimator class"):
        load_estimator(tmp_path / "c.ckpt")


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path: Path, monkeypatch):
    path = save_estimator(_trained(n=50), tmp_path / "m.ckpt")
    good = path.read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_estimator(_trained(n=80), path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["m.ckpt"]  # no temp file left behind


def test_unsupported_labels_are_refused_at_save(tmp_path: Path):
    model = DASClassifier(seed=0)
    model.learn_one({"a": 1.0}, ("tuple", "label"))
    with pytest.raises(ValueError, match="cannot be checkpointed"):
        save_estimator(model, tmp_path / "m.ckpt")


def test_trainer_checkpoint_round_trip_and_corruption(tmp_path: Path):
    from streamdas import DASTrainer, NetConfig, SizingConfig

    trainer = DASTrainer(NetConfig(3, (6, 5), 2), sizing=SizingConfig(every=32, min_growth=2), seed=0)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        x = torch.randn(16, 3, generator=g)
        trainer.step(x, (x[:, 0] > 0).long())
    trainer.save(tmp_path / "t.ckpt")
    loaded = DASTrainer.load(tmp_path / "t.ckpt")
    assert loaded.net.hidden_sizes == trainer.net.hidden_sizes
    assert loaded.n_samples == trainer.n_samples == 160
    x = torch.randn(8, 3, generator=g)
    assert torch.equal(loaded.predict(x), trainer.predict(x))
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "t.ckpt").read_bytes()[:100])
    with pytest.raises(CheckpointError):
        DASTrainer.load(tmp_path / "cut.ckpt")
    ckpt.save({"format": "streamdas-trainer", "version": 99}, tmp_path / "v.ckpt")
    with pytest.raises(CheckpointError, match="version"):
        DASTrainer.load(tmp_path / "v.ckpt")
