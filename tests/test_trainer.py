"""The GRU trainer mixin on a plain transformers Trainer (no host needed).

A learning rate of 0 keeps the weights fixed, so the gradient the optimizer sees at
every step can be recomputed independently in float64 from the recorded batches.
"""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

import gru_plugin.trainer
from gru_plugin.settings import GRUSettings
from gru_plugin.trainer import gru_trainer_class

SEQ = 6


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
    )
    return LlamaForCausalLM(config)


def sample(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 4, (SEQ,), generator=g)  # similar texts: GA conflicts
    return {"input_ids": ids, "attention_mask": torch.ones(SEQ), "labels": ids}


class ForgetRetain(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"forget": sample(i), "retain": sample(1000 + i)}


def collate(rows):
    return {
        part: {k: torch.stack([r[part][k] for r in rows]) for k in rows[0][part]}
        for part in ("forget", "retain")
    }


class GradientAscent(Trainer):
    """A minimal host-like method that records what it saw, per micro-batch."""

    seen: list

    @staticmethod
    def loss_of(model, inputs):
        return -model(**inputs["forget"]).loss

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        self.seen.append((self.state.global_step, inputs))
        return self.loss_of(model, inputs)


class GradDiff(GradientAscent):
    """Host-like: its own NLL retain loss, weighted into the method's loss."""

    retain_loss_type = "NLL"
    alpha = 0.7

    def compute_retain_loss(self, model, retain_inputs):
        return model(**retain_inputs).loss

    @staticmethod
    def retain_term_of(model, inputs):
        return 0.7 * model(**inputs["retain"]).loss

    @staticmethod
    def loss_of(model, inputs):
        return -model(**inputs["forget"]).loss + GradDiff.retain_term_of(model, inputs)

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        self.seen.append((self.state.global_step, inputs))
        forget = -model(**inputs["forget"]).loss
        return forget + self.alpha * self.compute_retain_loss(model, inputs["retain"])


TOY_ARGS = {
    "optim": "sgd",
    "report_to": [],
    "save_strategy": "no",
    "logging_steps": 1,
    "remove_unused_columns": False,
    "use_cpu": True,
    "disable_tqdm": True,
}
"""TrainingArguments of every toy run: plain SGD, CPU, no side effects."""


def make_trainer(n, gas, epochs, gru, tmp_path, base=GradientAscent, dtype=None):
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=1,
        gradient_accumulation_steps=gas,
        num_train_epochs=epochs,
        learning_rate=0.0,
        max_grad_norm=0.0,
        **TOY_ARGS,
    )
    cls = gru_trainer_class(base) if gru else base
    kwargs = {"gru_settings": gru} if gru else {}
    trainer = cls(
        model=tiny_model().to(dtype or torch.float32),
        args=args,
        train_dataset=ForgetRetain(n),
        data_collator=collate,
        **kwargs,
    )
    trainer.seen = []
    captured = []
    trainer.create_optimizer()
    params = [p for p in trainer.model.parameters() if p.requires_grad]

    def capture(optimizer, *_):
        captured.append([p.grad.detach().double().clone() for p in params])

    trainer.optimizer.register_step_pre_hook(capture)
    return trainer, captured


def grads_of(model, loss) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params)
    return torch.cat([g.reshape(-1).double() for g in grads])


def trainer_loss_divisor(trainer, gas: int, window: int) -> int:
    """What the Trainer divides each micro-batch's loss by, by its own rule: the
    window's real length on transformers 5; ``gradient_accumulation_steps`` on
    4.45; nothing on 4.46-4.5x when the model takes loss kwargs (Llama does), which
    leaves a custom ``compute_loss`` undivided (docs/host-versions.md). GRU's
    decisions do not depend on g's scale; clipping and the step size do."""
    if hasattr(trainer, "current_gradient_accumulation_steps"):
        return window
    if getattr(trainer, "compute_loss_func", ...) is None:  # 4.46-4.5x
        return 1 if trainer.model_accepts_loss_kwargs else gas
    return gas


def expected_steps(
    trainer, gas, gamma, loss_of=GradientAscent.loss_of, held_term_of=None
):
    """Recompute every step's rectified gradient from the recorded micro-batches;
    with ``held_term_of``, that term's gradient is added after the projection."""
    model = trainer.model
    by_step: dict[int, list] = {}
    for step, inputs in trainer.seen:
        by_step.setdefault(step, []).append(inputs)
    r = None
    out = []
    for step in sorted(by_step):
        batches = by_step[step]
        n = trainer_loss_divisor(trainer, gas, len(batches))
        g = sum(grads_of(model, loss_of(model, b)) / n for b in batches)
        held = 0
        if held_term_of is not None:
            held = sum(grads_of(model, held_term_of(model, b)) / n for b in batches)
        g = g - held
        f = sum(grads_of(model, model(**b["retain"]).loss) / n for b in batches)
        r = gamma * f + (1 - gamma) * (r if r is not None else torch.zeros_like(f))
        dot = torch.dot(g, r)
        if dot < 0:
            g = g - dot / torch.dot(r, r) * r
        out.append(g + held)
    return out


@pytest.mark.parametrize(
    ("n", "gas", "epochs"),
    [
        (6, 2, 1),  # aligned
        (5, 2, 2),  # the window spans the epoch end
        (3, 4, 2),  # epoch shorter than the window: the forced epoch-end step
    ],
)
def test_rectified_gradient_matches_float64_reference(n, gas, epochs, tmp_path, caplog):
    settings = GRUSettings(gamma=0.8)
    trainer, captured = make_trainer(n, gas, epochs, settings, tmp_path)
    assert not trainer.gru_fast_path
    with caplog.at_level(logging.WARNING, logger="gru_plugin.trainer"):
        trainer.train()
    assert "did not foresee" not in caplog.text
    steps = trainer.state.global_step
    assert len(captured) == steps == len(trainer.gru_history)
    logged = [e for e in trainer.state.log_history if "gru/fired" in e]
    assert len(logged) == steps
    expected = expected_steps(trainer, gas, 0.8)
    assert len(expected) == steps
    for seen, want in zip(captured, expected, strict=True):
        got = torch.cat([t.reshape(-1) for t in seen])
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)
    assert any(stats.fired for stats in trainer.gru_history)


def test_disabled_is_the_base_method(tmp_path):
    base, base_grads = make_trainer(5, 2, 1, None, tmp_path / "a")
    base.train()
    off, off_grads = make_trainer(5, 2, 1, GRUSettings(enabled=False), tmp_path / "b")
    off.train()
    assert off.gru_history == []
    for a, b in zip(base_grads, off_grads, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_reference_host_needs_a_retain_loss(tmp_path):
    with pytest.raises(ValueError, match="gru.reference=host.*compute_retain_loss"):
        make_trainer(2, 1, 1, GRUSettings(reference="host"), tmp_path)


def test_retain_stream_does_not_touch_the_unlearning_gradient(tmp_path):
    """Swapping param.grad keeps g exactly the base method's (bit for bit)."""
    never = GRUSettings(strategy="cosclip", strategy_args={"c": 0.0})
    base, base_grads = make_trainer(4, 2, 1, None, tmp_path / "a")
    base.train()
    gru, gru_grads = make_trainer(4, 2, 1, never, tmp_path / "b")
    gru.train()
    assert not any(s.fired for s in gru.gru_history)
    assert len(gru.gru_history) == len(gru_grads) == 2
    for a, b in zip(base_grads, gru_grads, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_bf16_parameters(tmp_path):
    """bf16 weights: bf16 gradients and EMA, fp32/fp64 reductions, no NaN."""
    trainer, captured = make_trainer(
        4, 2, 1, GRUSettings(), tmp_path, dtype=torch.bfloat16
    )
    trainer.train()
    assert all(t.dtype == torch.bfloat16 for t in trainer.gru_reference.tensors)
    assert len(trainer.gru_history) == 2
    for stats in trainer.gru_history:
        assert all(
            torch.isfinite(torch.tensor(v))
            for v in (stats.dot, stats.cos, stats.coef, stats.cos_after)
        )
        if stats.fired:
            assert stats.cos_after >= -1e-6
    assert any(stats.fired for stats in trainer.gru_history)


@pytest.mark.parametrize("gamma", [0.8, 1.0, 0.3])
@pytest.mark.parametrize("fast_path", [True, False])
def test_fast_path_and_ema(gamma, fast_path, tmp_path):
    """Reusing the method's retain backward gives the float64 reference result."""
    settings = GRUSettings(gamma=gamma, fast_path=fast_path)
    trainer, captured = make_trainer(5, 2, 2, settings, tmp_path, base=GradDiff)
    assert trainer.gru_fast_path == fast_path
    trainer.train()
    expected = expected_steps(trainer, 2, gamma, GradDiff.loss_of)
    assert len(captured) == len(expected) == trainer.state.global_step
    for seen, want in zip(captured, expected, strict=True):
        got = torch.cat([t.reshape(-1) for t in seen])
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize(("n", "gas", "epochs"), [(5, 2, 2), (3, 4, 2)])
def test_project_forget_matches_float64_reference(n, gas, epochs, fast_path, tmp_path):
    """Only the forget part is rectified; the method's retain term comes after."""
    settings = GRUSettings(project="forget", fast_path=fast_path)
    trainer, captured = make_trainer(n, gas, epochs, settings, tmp_path, GradDiff)
    trainer.train()
    expected = expected_steps(
        trainer, gas, 0.8, GradDiff.loss_of, GradDiff.retain_term_of
    )
    assert len(captured) == len(expected) == trainer.state.global_step
    for seen, want in zip(captured, expected, strict=True):
        got = torch.cat([t.reshape(-1) for t in seen])
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    assert any(stats.fired for stats in trainer.gru_history)
    whole = expected_steps(trainer, gas, 0.8, GradDiff.loss_of)
    assert any(not torch.allclose(a, b) for a, b in zip(expected, whole, strict=True))
    assert trainer._gru_retain_part.buffers[0].abs().max() == 0  # cleared each step


def test_project_forget_is_all_without_a_retain_loss(tmp_path):
    """GradAscent has no retain term: ``forget`` is ``all``, bit for bit."""
    every, every_grads = make_trainer(5, 2, 1, GRUSettings(), tmp_path / "a")
    every.train()
    settings = GRUSettings(project="forget")
    forget, forget_grads = make_trainer(5, 2, 1, settings, tmp_path / "b")
    forget.train()
    assert forget._gru_retain_part is None
    for a, b in zip(every_grads, forget_grads, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def trained_weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_resume_restores_the_ema(tmp_path, monkeypatch):
    """Train 4 steps; resume a second run from step 2: identical final weights."""
    # transformers 4.45 reads its own rng_state.pth with torch.load's defaults, which
    # torch >= 2.6 made weights-only; this lets that file (numpy state) load again.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

    def run(out, resume=None):
        trainer, _ = make_trainer(8, 2, 1, GRUSettings(), out, base=GradDiff)
        trainer.args.learning_rate = 1e-2
        trainer.args.save_strategy = "steps"
        trainer.args.save_steps = 2
        trainer.args.save_only_model = False
        trainer.args.resume_from_checkpoint = resume
        trainer.optimizer = None  # rebuilt with the new learning rate
        trainer.train()
        return trainer

    full = run(tmp_path / "full")
    assert (tmp_path / "full" / "checkpoint-2" / "gru_state.safetensors").is_file()
    resumed = run(tmp_path / "resumed", resume=str(tmp_path / "full" / "checkpoint-2"))
    assert len(resumed.gru_history) == 2
    assert [s.coef for s in resumed.gru_history] == [
        s.coef for s in full.gru_history[2:]
    ]
    a, b = trained_weights(full), trained_weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)

    # Without the saved state the EMA restarts from zero and the run differs.
    bare = tmp_path / "bare"
    shutil.copytree(tmp_path / "full" / "checkpoint-2", bare)
    (bare / "gru_state.safetensors").unlink()
    restarted = run(tmp_path / "restarted", resume=str(bare))
    assert [s.dot for s in restarted.gru_history] != [
        s.dot for s in full.gru_history[2:]
    ]


def test_statistics_join_the_training_log_of_their_step(tmp_path):
    trainer, _ = make_trainer(8, 1, 1, GRUSettings(), tmp_path)
    trainer.args.logging_steps = 2
    trainer.train()
    logged = [e for e in trainer.state.log_history if "gru/cos" in e]
    assert [e["step"] for e in logged] == [2, 4, 6, 8]
    for entry in logged:
        assert "loss" in entry  # the Trainer's own entry for that step
        window = trainer.gru_history[entry["step"] - 2 : entry["step"]]
        assert entry["gru/cos"] == pytest.approx(sum(s.cos for s in window) / 2)
        assert entry["gru/fired"] == sum(s.fired for s in window) / 2


def nan_on_second_reference(monkeypatch):
    """The run's second reference pass yields NaN (a poisoned retain batch)."""
    calls = []
    original = gru_plugin.trainer.extra_reference_loss

    def reference_loss(method, model, inputs):
        calls.append(1)
        loss = original(method, model, inputs)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(gru_plugin.trainer, "extra_reference_loss", reference_loss)


def test_nan_reference_is_counted_skipped_and_the_ema_restarts(
    tmp_path, caplog, monkeypatch
):
    trainer, captured = make_trainer(4, 1, 1, GRUSettings(gamma=0.5), tmp_path)
    nan_on_second_reference(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="gru_plugin.trainer"):
        trainer.train()
    finite = [stats.finite for stats in trainer.gru_history]
    assert finite == [True, False, True, True]
    assert "reference gradient r holds NaN/inf at step 2" in caplog.text
    assert "restarts from zero" in caplog.text
    assert trainer.gru_history[2].fired  # r works again right after the restart
    assert all(torch.isfinite(g).all() for step in captured for g in step)
    logged = [e["gru/nonfinite"] for e in trainer.state.log_history if "loss" in e]
    assert logged == [0, 1, 1, 1]


def test_nan_reference_stops_the_run_when_asked(tmp_path, monkeypatch):
    settings = GRUSettings(nonfinite="raise")
    trainer, _ = make_trainer(4, 1, 1, settings, tmp_path)
    nan_on_second_reference(monkeypatch)
    with pytest.raises(FloatingPointError, match=r"step 2.*gru.nonfinite=raise"):
        trainer.train()


def test_resume_keeps_the_nonfinite_count(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

    def run(out, resume=None, poison=False):
        trainer, _ = make_trainer(4, 1, 1, GRUSettings(), out)
        trainer.args.save_strategy = "steps"
        trainer.args.save_steps = 2
        trainer.args.save_only_model = False
        trainer.args.resume_from_checkpoint = resume
        with monkeypatch.context() as patch:
            if poison:
                nan_on_second_reference(patch)
            trainer.train()
        return trainer

    assert run(tmp_path / "full", poison=True).gru_nonfinite == 1
    resumed = run(tmp_path / "resumed", resume=str(tmp_path / "full" / "checkpoint-2"))
    assert resumed.gru_nonfinite == 1 and len(resumed.gru_history) == 2


class RandomRetain(ForgetRetain):
    """Draws each retain row with the global RNG, as the host's dataset does."""

    def __getitem__(self, i):
        j = int(torch.randint(0, 1000, (1,)))
        return {"forget": sample(i), "retain": sample(1000 + j)}


@pytest.mark.parametrize("fast_path", [True, False])
def test_gru_draws_no_random_numbers(tmp_path, fast_path):
    """A GRU run sees the base run's retain batches and leaves the RNG as it does."""
    runs = []
    for name, gru in (("base", None), ("gru", GRUSettings(fast_path=fast_path))):
        trainer, _ = make_trainer(6, 2, 1, gru, tmp_path / name, base=GradDiff)
        trainer.train_dataset = RandomRetain(6)
        trainer.train()
        retain = [inputs["retain"]["input_ids"] for _, inputs in trainer.seen]
        runs.append((retain, torch.get_rng_state()))
    (base_retain, base_rng), (gru_retain, gru_rng) = runs
    assert len(base_retain) == len(gru_retain) == 6
    assert all(torch.equal(a, b) for a, b in zip(base_retain, gru_retain, strict=True))
    assert torch.equal(base_rng, gru_rng)
