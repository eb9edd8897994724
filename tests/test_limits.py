"""Bounded growth from data: ``max_classes``, ``max_label_length`` and ``max_features``.

A record past a bound raises ``streamdas.LimitError`` (a ``ValueError`` naming the bound in
``reason``) before anything changes: the model pickles to the same bytes as before.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

import streamdas
from streamdas import DASClassifier, DASRegressor, LimitError


def _fed(model, n: int = 20):
    """``model`` after ``n`` samples of two features and labels "a"/"b" (classifier) or targets."""
    rng = np.random.default_rng(0)
    classifier = isinstance(model, DASClassifier)
    for i in range(n):
        a, b = rng.normal(size=2)
        model.learn_one({"a": float(a), "b": float(b)}, "ab"[i % 2] if classifier else float(a))
    return model


def _refused(model, reason: str, learn) -> None:
    """``learn(model)`` raises LimitError for ``reason`` and leaves the model as it was."""
    snapshot = pickle.dumps(model)
    with pytest.raises(LimitError) as info:
        learn(model)
    assert info.value.reason == reason
    assert len(str(info.value)) < 200  # never the label or a key itself, however long
    assert isinstance(info.value, ValueError)
    assert pickle.dumps(model) == snapshot


def test_limit_error_is_exported_and_is_a_value_error():
    assert streamdas.LimitError is LimitError and "LimitError" in streamdas.__all__
    assert issubclass(LimitError, ValueError)


def test_the_defaults_bound_classes_label_length_and_features():
    model = DASClassifier()
    assert (model.max_classes, model.max_label_length, model.max_features) == (1000, 256, 10_000)
    assert DASRegressor().max_features == 10_000


def test_a_thousand_and_first_label_is_refused_by_default():
    """A new label on every record no longer grows the model without bound."""
    model = DASClassifier(hidden_sizes=(8,), seed=0)
    X = pd.DataFrame({"a": np.arange(1000, dtype=float)})
    model.learn_many(X, pd.Series([f"label {i}" for i in range(1000)]))
    assert len(model.classes) == 1000 and model.trainer.net.n_outputs == 1000
    _refused(model, "too_many_classes", lambda m: m.learn_one({"a": 1.0}, "one more"))
    model.learn_one({"a": 1.0}, "label 7")  # known labels still learn


@pytest.mark.parametrize("how", ["learn_one", "learn_many", "learn_many_split"])
def test_class_limit_refuses_the_whole_record_or_batch(how: str):
    model = _fed(
        DASClassifier(max_classes=3, batch_size=4, batch_warmup=0, seed=0), 6
    )  # "a", "b"; 2 buffered
    assert model.n_samples_buffered == 2
    if how == "learn_one":  # a new feature and two new classes (a boolean adds both)
        _refused(model, "too_many_classes", lambda m: m.learn_one({"a": 1.0, "new": 2.0}, True))
    else:  # "c" would fit, "c" and "d" together do not
        X = pd.DataFrame({"a": [1.0, 2.0, 3.0], "new": [1.0, 1.0, 1.0]})
        y = pd.Series(["c", "d", "a"])
        _refused(model, "too_many_classes", lambda m: m.learn_many(X, y, split=how.endswith("split")))
    model.learn_one({"a": 1.0}, "c")  # the third class fits
    assert model.classes == ["a", "b", "c"]
    _refused(model, "too_many_classes", lambda m: m.learn_one({"a": 1.0}, "d"))


@pytest.mark.parametrize("label", ["x" * 600_000, 10**300, 10**5000], ids=["str", "int", "int beyond str()"])
def test_label_length_limit(label):
    model = _fed(DASClassifier(seed=0))
    _refused(model, "label_too_long", lambda m: m.learn_one({"a": 1.0}, label))
    _refused(
        model,
        "label_too_long",
        lambda m: m.learn_many(pd.DataFrame({"a": [1.0, 2.0]}), pd.Series(["a", label], dtype=object)),
    )
    model.learn_one({"a": 1.0}, "x" * 256)
    assert "x" * 256 in model.classes


@pytest.mark.parametrize("cls", [DASClassifier, DASRegressor])
@pytest.mark.parametrize("how", ["learn_one", "learn_many", "learn_many_split"])
def test_feature_limit_refuses_the_record_and_predicting_never_grows(cls, how):
    model = _fed(cls(max_features=3, batch_size=4, batch_warmup=0, seed=0), 6)
    assert model.n_features == 2 and model.n_samples_buffered == 2
    y = "b" if cls is DASClassifier else 0.5
    if how == "learn_one":
        _refused(model, "too_many_features", lambda m: m.learn_one({"a": 1.0, "c": 1.0, "d": 2.0}, y))
    else:
        X = pd.DataFrame({"a": [1.0, 2.0], "c": [1.0, 1.0], "d": [0.0, 1.0]})
        _refused(
            model,
            "too_many_features",
            lambda m: m.learn_many(X, pd.Series([y, y]), split=how.endswith("split")),
        )
    x = {"a": 1.0, "b": 0.5}
    before = model.predict_one(x)
    assert model.predict_one({**x, **{f"unknown {i}": 1.0 for i in range(50)}}) == before
    assert model.n_features == 2 and model.trainer.net.n_inputs == 2
    model.learn_one({"a": 1.0, "c": 3.0}, y)  # the third feature fits
    assert model.n_features == 3


def test_the_default_feature_limit_on_a_wide_record():
    """A first record of 10,001 keys is refused whole; one of 10,000 is taken."""
    model = DASClassifier(hidden_sizes=(4,), seed=0)
    wide = {f"f{i}": 1.0 for i in range(10_001)}
    _refused(model, "too_many_features", lambda m: m.learn_one(wide, 0))
    del wide["f0"]
    model.learn_one(wide, 0)
    assert model.n_features == 10_000
    _refused(model, "too_many_features", lambda m: m.learn_one({"f0": 1.0}, 0))


def test_no_bound_with_none():
    model = DASClassifier(max_classes=None, max_features=None, hidden_sizes=(4,), seed=0)
    X = pd.DataFrame(np.ones((1, 10_050)), columns=[f"f{i}" for i in range(10_050)])
    model.learn_many(X, pd.Series([0]))
    model.learn_many(pd.DataFrame({"f0": np.arange(1200.0)}), pd.Series(range(1200)))
    assert model.n_features == 10_050 and len(model.classes) == 1200


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_classes", 0),
        ("max_classes", 2.5),
        ("max_classes", True),
        ("max_label_length", None),
        ("max_label_length", -1),
        ("max_features", 0),
        ("max_features", "10"),
    ],
)
def test_bounds_are_validated(name, value):
    with pytest.raises(ValueError, match=name):
        DASClassifier(**{name: value})


def test_bounds_are_parameters_cloned_and_checkpointed(tmp_path):
    model = _fed(DASClassifier(max_classes=5, max_label_length=12, max_features=7, seed=0))
    params = model._get_params()
    assert (params["max_classes"], params["max_label_length"], params["max_features"]) == (5, 12, 7)
    clone = model.clone()
    assert (clone.max_classes, clone.max_label_length, clone.max_features) == (5, 12, 7)
    loaded, _ = streamdas.load_estimator(streamdas.save_estimator(model, tmp_path / "m.ckpt"))
    assert (loaded.max_classes, loaded.max_label_length, loaded.max_features) == (5, 12, 7)
    reg = DASRegressor(max_features=None)
    assert DASRegressor.from_state(reg.to_state()).max_features is None
    assert "max_classes" not in reg._get_params()


def test_states_written_before_the_bounds_load_with_the_defaults():
    state = _fed(DASClassifier(max_classes=5, max_label_length=12, max_features=7, seed=0)).to_state()
    for name in ("max_classes", "max_label_length", "max_features"):
        del state["params"][name]
    restored = DASClassifier.from_state(state)
    assert (restored.max_classes, restored.max_label_length, restored.max_features) == (1000, 256, 10_000)
