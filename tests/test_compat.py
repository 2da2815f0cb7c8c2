"""The version differences in gru_plugin.compat, on stand-in Trainers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import transformers

from gru_plugin import compat


def trainer(sync: bool, end_of_epoch: bool, batches_in_epoch: int, gas: int = 4):
    state = SimpleNamespace(
        end_of_dataloader=end_of_epoch, active_dataloader=[None] * batches_in_epoch
    )
    accelerator = SimpleNamespace(sync_gradients=sync, gradient_state=state)
    args = SimpleNamespace(gradient_accumulation_steps=gas)
    return SimpleNamespace(accelerator=accelerator, args=args)


@pytest.mark.parametrize("prefetches", [True, False])
def test_the_boundary_is_sync_gradients(monkeypatch, prefetches):
    monkeypatch.setattr(compat, "TRAINER_PREFETCHES_WINDOWS", prefetches)
    assert compat.at_step_boundary(trainer(True, False, 8))
    assert not compat.at_step_boundary(trainer(False, False, 8))
    assert not compat.at_step_boundary(trainer(False, True, 8))  # a long epoch


def test_a_short_epochs_forced_step_only_where_the_trainer_does_not_prefetch(
    monkeypatch,
):
    """4.45 steps after a short epoch's last batch with sync_gradients still
    false; from 4.46 end_of_dataloader is true at every batch of such an epoch."""
    short_epoch_end = trainer(sync=False, end_of_epoch=True, batches_in_epoch=3)
    monkeypatch.setattr(compat, "TRAINER_PREFETCHES_WINDOWS", False)
    assert compat.at_step_boundary(short_epoch_end)
    monkeypatch.setattr(compat, "TRAINER_PREFETCHES_WINDOWS", True)
    assert not compat.at_step_boundary(short_epoch_end)


def test_prefetching_is_read_from_the_installed_trainer():
    prefetches = hasattr(transformers.Trainer, "get_batch_samples")
    assert compat.TRAINER_PREFETCHES_WINDOWS is prefetches


def test_micro_batches_follow_the_trainers_divisor():
    plain = SimpleNamespace(args=SimpleNamespace(gradient_accumulation_steps=4))
    assert compat.micro_batches_in_step(plain) == 4
    plain.current_gradient_accumulation_steps = 3  # transformers 5, a short window
    assert compat.micro_batches_in_step(plain) == 3


def test_a_too_old_transformers_fails_naming_the_fix(monkeypatch):
    monkeypatch.setattr(transformers, "__version__", "4.44.2")
    with pytest.raises(ImportError, match=r"transformers >= 4.45, found 4.44.2.*pip"):
        compat.check_transformers_version()
