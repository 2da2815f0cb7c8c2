"""What the sharded engines (ZeRO, FSDP2) share: each rank holds a shard of g and r.

So each rank saves its own shard of r, and the projection's three sums are added
over ranks once per step.
"""

from __future__ import annotations

import torch


def per_rank_state_file(trainer) -> str:
    """Each rank keeps its shard of r in the checkpoint folder."""
    return f"gru_state.rank{trainer.args.process_index}.safetensors"


def sum_over_ranks(sums: tuple[float, ...], device: torch.device) -> tuple[float, ...]:
    """Add each rank's partial sums: one collective of a few scalars."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return sums
    totals = torch.tensor(sums, dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return tuple(totals.tolist())
