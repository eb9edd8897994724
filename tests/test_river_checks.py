"""River's own estimator checks, on both estimators."""

from __future__ import annotations

import pytest
from river import checks

from streamdas import DASClassifier, DASRegressor


def _cases():
    for model in (
        DASClassifier(hidden_sizes=(16, 16), grow_every=100, batch_size=8),
        DASRegressor(hidden_sizes=(16, 16), grow_every=100, batch_size=8),
    ):
        for check in checks.yield_checks(model):
            if check.__name__ in model._unit_test_skips():
                continue  # justified in _DASEstimator._unit_test_skips
            yield pytest.param(model, check, id=f"{type(model).__name__}-{check.__name__}")


@pytest.mark.parametrize(("model", "check"), list(_cases()))
def test_river_check(model, check):
    check(model.clone())


def test_only_the_justified_check_is_skipped():
    assert DASClassifier()._unit_test_skips() == {"check_learn_many_matches_learn_one"}
