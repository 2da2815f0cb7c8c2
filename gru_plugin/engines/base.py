"""What engines share: the defaults of an engine whose gradients the Trainer steps.

Each engine also defines ``handles(trainer)``, ``state_file(trainer)``, ``params``,
``layout()``, ``backward_reference(loss, into, alpha, weight_in_loss,
retain_part)`` and ``rectify(reference, coefficient, retain_part)`` (see
``engines/__init__.py``), and overrides what it does differently.
"""

from __future__ import annotations

import torch

from gru_plugin.compat import at_step_boundary


class TrainerStepped:
    """The Trainer clips and steps the optimizer; GRU acts in ``training_step``."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer

    def start_micro_batch(self) -> None:
        """Before the method's forward: nothing to prepare by default."""

    def reference_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model the reference loss runs through: the one the Trainer gave."""
        return model

    def at_boundary(self) -> bool:
        """Whether the optimizer steps after this micro-batch."""
        return at_step_boundary(self.trainer)

    def end_micro_batch(self) -> None:
        """Nothing: the Trainer clips and steps the optimizer itself."""
