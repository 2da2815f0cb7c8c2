"""StepLog: the NaN policy per step and the means that join the Trainer's log."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from gru_plugin.rectify import RectifyStats
from gru_plugin.steplog import StepLog

FINE = RectifyStats(
    dot=-2.0, cos=-0.5, coef=-1.0, fired=True, grad_norm=2.0, ref_norm=2.0, cos_after=0
)
BAD_G = dataclasses.replace(FINE, dot=float("nan"), grad_norm=float("inf"))
BAD_R = dataclasses.replace(FINE, dot=float("nan"), ref_norm=float("nan"))


def test_a_finite_step_is_kept_and_not_counted():
    log = StepLog("skip")
    assert log.record(FINE, step=1) is False
    assert log.history == [FINE] and log.nonfinite_steps == 0


def test_a_bad_gradient_is_counted_and_r_kept(caplog):
    log = StepLog("skip")
    with caplog.at_level(logging.WARNING, logger="gru_plugin.steplog"):
        assert log.record(BAD_G, step=7) is False
    assert log.history == [BAD_G] and log.nonfinite_steps == 1
    assert (
        "GRU: the gradient g holds NaN/inf at step 7 (1 such step(s) so far); this "
        "step is not rectified (gru.nonfinite=skip; set gru.nonfinite=raise to stop "
        "instead)"
    ) in caplog.text
    assert "restarts" not in caplog.text


def test_a_bad_reference_asks_for_a_restart(caplog):
    log = StepLog("skip")
    log.record(BAD_G, step=1)
    with caplog.at_level(logging.WARNING, logger="gru_plugin.steplog"):
        assert log.record(BAD_R, step=2) is True
    assert log.nonfinite_steps == 2
    assert (
        "GRU: the reference gradient r holds NaN/inf at step 2 (2 such step(s) so "
        "far); the reference EMA restarts from zero; this step is not rectified"
    ) in caplog.text


@pytest.mark.parametrize(
    ("stats", "what"), [(BAD_G, "the gradient g"), (BAD_R, "the reference gradient r")]
)
def test_raise_stops_at_the_first_bad_step(stats, what):
    log = StepLog("raise")
    log.record(FINE, step=1)
    with pytest.raises(FloatingPointError) as error:
        log.record(stats, step=2)
    assert str(error.value) == (
        f"GRU: {what} holds NaN/inf at step 2 (1 such step(s) so far); stopping "
        "(gru.nonfinite=raise)"
    )
    assert log.nonfinite_steps == 1


def test_only_training_entries_get_the_means_of_their_steps():
    log = StepLog("skip")
    quiet = dataclasses.replace(FINE, cos=0.5, coef=0.0, fired=False, dot=1.0)
    log.record(FINE, step=1)
    log.record(quiet, step=2)
    evaluation = {"eval_loss": 1.0}
    log.add_to(evaluation)
    assert evaluation == {"eval_loss": 1.0}
    training = {"loss": 0.3}
    log.add_to(training)
    assert training == {
        "loss": 0.3,
        "gru/cos": 0.0,
        "gru/cos_after": 0.0,
        "gru/dot": -0.5,
        "gru/coef": -0.5,
        "gru/fired": 0.5,
        "gru/grad_norm": 2.0,
        "gru/ref_norm": 2.0,
        "gru/nonfinite": 0,
    }
    again = {"loss": 0.2}
    log.add_to(again)  # no step since the last entry: nothing to add
    assert again == {"loss": 0.2}


def test_each_entry_averages_only_its_own_steps_and_counts_the_run():
    log = StepLog("skip")
    log.record(FINE, step=1)
    log.add_to({"loss": 1.0})
    log.record(BAD_G, step=2)
    log.record(dataclasses.replace(FINE, coef=-3.0), step=3)
    entry = {"loss": 0.5}
    log.add_to(entry)
    assert entry["gru/coef"] == -2.0 and entry["gru/nonfinite"] == 1
    assert log.history == [FINE, BAD_G, dataclasses.replace(FINE, coef=-3.0)]
