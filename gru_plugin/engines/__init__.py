"""Where the gradients live, by training engine: the one place an engine is chosen.

An engine module gives GRU the gradient pieces it rectifies and the reference
backward that fills r, in one class with ``handles(trainer)``,
``state_file(trainer)``, ``layout()``, ``start_micro_batch()``,
``reference_model(model)``,
``backward_reference(loss, into, alpha, weight_in_loss, retain_part)``,
``at_boundary()``, ``end_micro_batch()`` and
``rectify(reference, coefficient, retain_part)`` (``retain_part``: the method's
retain term of g that ``gru.project=forget`` holds back until after the
projection). ``base.TrainerStepped`` holds the defaults of an engine whose
gradients the Trainer steps. Adding an engine is one module and one line in
``ENGINES``.
"""

from __future__ import annotations

from accelerate.utils import DistributedType

from gru_plugin.engines.fsdp import FullyShardedGradients
from gru_plugin.engines.local import LocalGradients
from gru_plugin.engines.zero import ZeroGradients

ENGINES = (ZeroGradients, FullyShardedGradients, LocalGradients)
"""Asked in order; the first whose ``handles(trainer)`` is true owns the gradients."""

UNSUPPORTED_ENGINES = {
    DistributedType.FSDP: (
        "FSDP1 flattens the parameters into shards GRU does not map; use FSDP2 "
        "(fsdp_version: 2 in the accelerate config, or fsdp_config version 2 in "
        "the Trainer's arguments; accelerate >= 1.6)"
    ),
}
"""Engines GRU refuses before training, and why."""


def engine_class_for(trainer) -> type:
    """The engine class for ``trainer``'s run, or an error naming the fix."""
    owner = next((cls for cls in ENGINES if cls.handles(trainer)), None)
    engine = trainer.accelerator.distributed_type
    if owner is None:
        raise ValueError(
            f"GRU does not support {engine.value} here: "
            f"{UNSUPPORTED_ENGINES[engine]}. Or run on one process, with plain DDP "
            "(accelerate launch --multi_gpu, or torchrun) or with DeepSpeed "
            "ZeRO-1/2/3, or set gru.enabled=false"
        )
    return owner
