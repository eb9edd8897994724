"""The estimators keep River's method signatures: every override accepts what River's base
method accepts (River's pipelines pass keyword arguments through ``predict_one`` and
``predict_proba_one``); mypy checks the rest (``make typecheck``)."""

from __future__ import annotations

import inspect

import pytest
from river import base, compose, preprocessing

from streamdas import DASClassifier, DASRegressor


def _overrides(cls: type) -> list[tuple[str, inspect.Signature, inspect.Signature]]:
    """``(name, ours, River's)`` for each public method of ``cls`` that streamdas defines over
    one of a River base class."""
    out = []
    for name in dir(cls):
        owners = [c for c in cls.__mro__ if name in vars(c)]
        if name.startswith("_") or not owners or not owners[0].__module__.startswith("streamdas."):
            continue
        river = next((c for c in owners if c.__module__.startswith("river.")), None)
        ours = vars(owners[0])[name]
        if river is not None and callable(ours):
            out.append((name, inspect.signature(ours), inspect.signature(vars(river)[name])))
    return out


@pytest.mark.parametrize("cls", [DASClassifier, DASRegressor])
def test_overrides_accept_what_river_s_methods_accept(cls: type) -> None:
    overrides = _overrides(cls)
    assert {"learn_one", "predict_one"} <= {name for name, _, _ in overrides}
    for name, ours, river in overrides:
        kinds = {p.kind for p in ours.parameters.values()}
        if any(p.kind is p.VAR_KEYWORD for p in river.parameters.values()):
            assert inspect.Parameter.VAR_KEYWORD in kinds, (cls.__name__, name)
        for param in river.parameters.values():
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and param.name != "self":
                assert param.name in ours.parameters, (cls.__name__, name, param.name)


def test_keyword_arguments_river_passes_on_are_accepted() -> None:
    model = DASClassifier(seed=0, batch_size=2)
    for i in range(8):
        model.learn_one({"a": float(i % 2)}, i % 2)
    x = {"a": 1.0}
    assert model.predict_one(x, with_extra=True) == model.predict_one(x)
    assert model.predict_proba_one(x, with_extra=True) == model.predict_proba_one(x)
    assert isinstance(model, base.Classifier)
    pipeline = compose.Pipeline(preprocessing.StandardScaler(), DASClassifier(seed=0, standardize=False))
    pipeline.learn_one(x, 1)
    assert pipeline.predict_one(x) == 1
