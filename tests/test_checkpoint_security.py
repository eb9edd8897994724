"""Checkpoints from an attacker: nothing is imported or called by name from a file, and every
failure to load is a :class:`~streamdas.CheckpointError`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from river import datasets, drift

from streamdas import CheckpointError, DASClassifier, load_estimator, save_estimator
from streamdas import checkpoint as ckpt


def _payload(model) -> dict:
    return {
        "format": ckpt.ESTIMATOR_FORMAT,
        "class": type(model).__name__,
        "estimator": model.to_state(),
        "extra": {},
    }


def _trained(n: int = 60, **kw) -> DASClassifier:
    model = DASClassifier(seed=3, grow_every=50, batch_size=8, **kw)
    for x, y in datasets.Phishing().take(n):
        model.learn_one(x, y)
    return model


def test_hostile_detector_entry_runs_nothing(tmp_path: Path):
    """The issue-14 exploit: module ``river.datasets.base`` reaches ``os.system``."""
    marker = tmp_path / "pwned"
    payload = _payload(_trained(drift_detector=drift.ADWIN()))
    hostile = [
        {"module": "river.datasets.base", "class": "os.system", "params": {"command": f"touch {marker}"}},
        {"module": "river.drift", "class": "adwin.os.system", "params": {"command": f"touch {marker}"}},
        {"module": "os", "class": "system", "params": {"command": f"touch {marker}"}},
        {"class": "ADWIN.__init__.__globals__", "params": {}},
        {"module": "river.datasets", "class": "Phishing", "params": {}},  # a River class, not a detector
        {"class": "ADWIN", "params": {"delta": "0.1; rm -rf /"}},
        {"class": "ADWIN", "params": {"nope": 1}},
        {"class": "ADWIN", "params": {"delta": float("nan")}},
        "ADWIN",
    ]
    for i, entry in enumerate(hostile):
        payload["estimator"]["params"]["drift_detector"] = entry
        path = tmp_path / f"h{i}.ckpt"
        ckpt.save(payload, path)
        with pytest.raises(CheckpointError):
            load_estimator(path)
        assert not marker.exists(), entry


def test_every_river_detector_on_the_allow_list_round_trips(tmp_path: Path):
    for det in [
        drift.ADWIN(delta=0.01),
        drift.PageHinkley(threshold=20.0),
        drift.KSWIN(seed=1),
        drift.NoDrift(),
        drift.DummyDriftDetector(t_0=100),
    ]:
        model = _trained(n=20, drift_detector=det)
        loaded, _ = load_estimator(save_estimator(model, tmp_path / "m.ckpt"))
        assert type(loaded.drift_detector) is type(det)
        assert loaded.drift_detector._get_params().keys() == det._get_params().keys()


def test_detector_outside_the_allow_list_is_refused_at_save(tmp_path: Path):
    class MyADWIN(drift.ADWIN):  # a subclass is not River's class: it could run anything
        pass

    model = _trained(n=20, drift_detector=MyADWIN())
    with pytest.raises(ValueError, match="allow-list"):
        save_estimator(model, tmp_path / "m.ckpt")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(features=5),  # not a list
        lambda s: s.update(stats={"count": [1.0], "mean": "x", "m2": [0.0]}),
        lambda s: s.update(n_drifts_detected=[1]),
        lambda s: s.update(classes=7),
        lambda s: s["params"].update(hidden_sizes="abc"),
        lambda s: s["params"].update(extra_param=1),
        lambda s: s.update(buffer_x=[1, 2]),
        lambda s: s["trainer"].update(net=[1]),
        lambda s: s["trainer"].update(counters=None),
        lambda s: s.pop("trainer"),
    ],
)
def test_malformed_state_raises_checkpoint_error_only(tmp_path: Path, mutate):
    payload = _payload(_trained())
    mutate(payload["estimator"])
    ckpt.save(payload, tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError):
        load_estimator(tmp_path / "m.ckpt")


def test_huge_architecture_is_refused_before_allocating(tmp_path: Path, monkeypatch):
    from streamdas import model as model_module

    built = []
    real_init = model_module.DASNet.__init__

    def spy(self, config, *args, **kwargs):
        if torch.empty(0).device.type != "meta":  # a shape check on the meta device is fine
            built.append(tuple(config.hidden_sizes))
        real_init(self, config, *args, **kwargs)

    payload = _payload(_trained())
    payload["estimator"]["trainer"]["net"]["hidden_sizes"] = [10**9, 10**9]
    ckpt.save(payload, tmp_path / "m.ckpt")
    monkeypatch.setattr(model_module.DASNet, "__init__", spy)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_estimator(tmp_path / "m.ckpt")
    assert (10**9, 10**9) not in built  # refused from the shapes in the file, not by trying


def test_extra_that_is_not_a_dict_raises(tmp_path: Path):
    payload = _payload(_trained(n=20))
    payload["extra"] = "abc"
    ckpt.save(payload, tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError):
        load_estimator(tmp_path / "m.ckpt")
