"""Where transformers and accelerate versions differ for GRU: the one place.

Each difference is detected from the library itself (a method or an attribute it
has), not from a version number, so a backport or a patched release is handled
the way it behaves.
"""

from __future__ import annotations

import transformers
from packaging.version import Version
from transformers import Trainer

OLDEST_TRANSFORMERS = Version("4.45")


def check_transformers_version() -> None:
    """Fail at import, naming the fix, on a transformers older than 4.45."""
    installed = Version(transformers.__version__)
    if installed < OLDEST_TRANSFORMERS:
        raise ImportError(
            f"gru-plugin needs transformers >= {OLDEST_TRANSFORMERS}, found "
            f"{installed}: pip install 'transformers>={OLDEST_TRANSFORMERS}'"
        )


check_transformers_version()


TRAINER_PREFETCHES_WINDOWS = hasattr(Trainer, "get_batch_samples")
"""transformers >= 4.46 fetches each accumulation window ahead and sets accelerate's
``sync_gradients`` before every micro-batch, the window's last one included. 4.45
sets it inside ``accelerator.accumulate``, and at the end of an epoch shorter than
the window forces a step only after ``training_step`` has returned."""


def at_step_boundary(trainer: Trainer) -> bool:
    """Whether the Trainer steps its optimizer after the current micro-batch."""
    accelerator = trainer.accelerator
    if accelerator.sync_gradients or TRAINER_PREFETCHES_WINDOWS:
        return accelerator.sync_gradients
    state = accelerator.gradient_state
    loader = state.active_dataloader
    return bool(
        state.end_of_dataloader
        and loader is not None
        and len(loader) <= trainer.args.gradient_accumulation_steps
    )


def micro_batches_in_step(trainer: Trainer) -> int:
    """What the Trainer divides each micro-batch's loss by, so r is a step's mean.

    transformers 5 divides by the current window's real length (shorter at an
    epoch's end); earlier versions by ``gradient_accumulation_steps``.
    """
    current = getattr(trainer, "current_gradient_accumulation_steps", None)
    return current or trainer.args.gradient_accumulation_steps
