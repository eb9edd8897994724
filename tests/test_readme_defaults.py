"""The defaults README.md states are the estimators' defaults: each claim is read from the text
(line breaks as spaces) and compared with the constructor's signature, and no setting listed as
"tried and not kept" is a default."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from streamdas import DASClassifier, DASRegressor

ROOT = Path(__file__).resolve().parents[1]
README = " ".join((ROOT / "README.md").read_text().split())
CLS = {k: p.default for k, p in inspect.signature(DASClassifier).parameters.items()}
REG = {k: p.default for k, p in inspect.signature(DASRegressor).parameters.items()}
NUM = r"([0-9][0-9_.e-]*)"


def _claim(pattern: str) -> tuple[str, ...]:
    """The groups of ``pattern`` (spaces in it match the README's wrapped lines) in README.md."""
    match = re.search(pattern.replace(" ", r"\s+"), README)
    assert match, f"README.md no longer states: {pattern}"
    return match.groups()


def _value(text: str) -> Any:
    text = text.strip().strip("\"'")
    try:
        return float(text.replace("_", ""))
    except ValueError:
        return text


def test_the_classifier_s_stream_defaults() -> None:
    w1, w2, batch, lr_tau, alpha = _claim(
        r"ReLU instead of SELU \(`activation=\"selu\"`\), a \((\d+), (\d+)\) start, one Adam step "
        rf"per (\d+) samples, `lr = tau = {NUM}`, `alpha = {NUM}`"
    )
    assert CLS["activation"] == "relu"
    assert CLS["hidden_sizes"] == (int(w1), int(w2))
    assert CLS["batch_size"] == int(batch)
    assert CLS["lr"] == CLS["tau"] == _value(lr_tau)
    assert CLS["alpha"] == _value(alpha)
    about, horizon = _claim(r"over about (\d+) samples \(`average_horizon=(\d+)`")
    assert CLS["average_horizon"] == int(about) == int(horizon)
    (memory,) = _claim(r"a \*\*neighbour memory\*\* beside the network \(`memory=(\d+)`")
    assert CLS["memory"] == int(memory)
    (batch,) = _claim(r"the last change, one step per (\d+) samples without rehearsal, gives the defaults")
    assert (CLS["batch_size"], CLS["rehearsal"]) == (int(batch), 0)
    size, k, forgetting = _claim(
        rf"`DASClassifier` predicts with a \*\*neighbour memory\*\* beside the network \(`memory=(\d+)`, "
        rf"`n_neighbors=(\d+)`, `mix_forgetting={NUM}`;"
    )
    assert (CLS["memory"], CLS["n_neighbors"], CLS["mix_forgetting"]) == (
        int(size),
        int(k),
        _value(forgetting),
    )
    (reg_rehearsal,) = _claim(r"`DASRegressor` rehearses \(`rehearsal=(\d+)` by default")
    assert REG["rehearsal"] == int(reg_rehearsal)


def test_learning_rates_and_thresholds() -> None:
    cls_lr_tau, reg_lr, reg_tau = _claim(
        rf"`DASClassifier`'s stream defaults keep `lr = tau = {NUM}`, `DASRegressor`'s "
        rf"`lr = {NUM}`, `tau = {NUM}`"
    )
    assert CLS["lr"] == CLS["tau"] == _value(cls_lr_tau)
    assert (REG["lr"], REG["tau"]) == (_value(reg_lr), _value(reg_tau))


def test_steps_per_sample() -> None:
    cls_batch, reg_batch = _claim(
        r"one optimizer step per `batch_size` samples \((\d+) for the "
        r"classifier, (\d+) for the regressor\)"
    )
    assert (CLS["batch_size"], REG["batch_size"]) == (int(cls_batch), int(reg_batch))
    cls_warmup, reg_warmup = _claim(
        r"With `batch_warmup=K` \(not in the paper; `(\d+)` for the\s+classifier, "
        r"`(\d+)`, off, for the regressor\)"
    )
    assert (CLS["batch_warmup"], REG["batch_warmup"]) == (int(cls_warmup), int(reg_warmup))
    assert REG["batch_warmup"] == 0


def test_the_regressor_s_own_defaults() -> None:
    lr, activation, w1, w2 = _claim(
        r"`DASRegressor` has its own defaults \(one Adam step per "
        rf"sample at the paper's `lr={NUM}`, (\w+), a \((\d+), (\d+)\) start"
    )
    assert REG["batch_size"] == 1
    assert REG["lr"] == _value(lr)
    assert REG["activation"] == activation.lower()
    assert REG["hidden_sizes"] == (int(w1), int(w2))


def test_bounds_and_robustness() -> None:
    classes, label, features = _claim(
        r"`DASClassifier\(max_classes=(\d+), max_label_length=(\d+)\)` "
        rf"\(characters of `str\(label\)`\) and `max_features={NUM}`"
    )
    assert (CLS["max_classes"], CLS["max_label_length"]) == (int(classes), int(label))
    assert CLS["max_features"] == REG["max_features"] == _value(features)
    (clip,) = _claim(rf"bounded influence \(`clip_sd={NUM}`\)")
    assert CLS["clip_sd"] == REG["clip_sd"] == _value(clip)
    (horizon,) = _claim(r"running average over about the last (\d+) samples \(`prune_horizon`")
    assert CLS["prune_horizon"] == REG["prune_horizon"] == int(horizon)


def _settings(text: str) -> list[tuple[str, Any]]:
    """``(name, value)`` of every backticked ``name=value`` / ``a = b = value`` in ``text``."""
    out = []
    for code in re.findall(r"`([^`]+)`", text):
        parts = [p.strip() for p in code.split("=")]
        if len(parts) >= 2 and all(re.fullmatch(r"\w+", p) for p in parts[:-1]):
            out += [(name, _value(parts[-1])) for name in parts[:-1]]
    return out


def test_no_default_is_listed_as_tried_and_not_kept() -> None:
    (tried,) = _claim(r"Tried and not kept (.*?kept as an option\))")
    settings = _settings(tried)
    assert ("lr", 2e-2) in settings and ("grow_init", "silent") in settings  # the parser reads it
    defaults = [(name, value) for name, value in settings if CLS.get(name, object()) == value]
    assert defaults == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "`alpha = 3e-5` (x), `batch_size=8` and `lr = tau = 1e-2`",
            [("alpha", 3e-5), ("batch_size", 8.0), ("lr", 1e-2), ("tau", 1e-2)],
        ),
        ('`grow_init="silent"` and `python -m x --das a=1,b=2`', [("grow_init", "silent")]),
    ],
)
def test_the_settings_reader(text: str, expected: list[tuple[str, Any]]) -> None:
    assert _settings(text) == expected
