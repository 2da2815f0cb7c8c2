"""The host's own trainers with ``+gru`` under DDP: 2 CPU processes over gloo.

Exactness against one process is tested on a toy trainer in tests/test_distributed.py;
here the host draws each rank's retain rows at random, so a 2-rank run sees other
retain batches than a 1-rank run and only the plumbing can be checked.
"""

from __future__ import annotations

import pytest
from host_runs import GRU_UNLEARN, two_rank_gru_logs

LAUNCHER = """
import sys
from torch.distributed.run import main
main(["--standalone", "--nproc_per_node=2", {gru_unlearn!r}, *sys.argv[1:]])
"""


@pytest.mark.parametrize("fast_path", ["true", "false"])
def test_graddiff_with_gru_under_ddp(run_host, tmp_path, fast_path):
    launcher = tmp_path / "ddp_launcher.py"
    launcher.write_text(LAUNCHER.format(gru_unlearn=GRU_UNLEARN))
    run = run_host(
        "trainer=GradDiff",
        "+gru=default",
        f"gru.fast_path={fast_path}",
        # The host's trainer config sets the string "None", which DDP rejects.
        "trainer.args.ddp_find_unused_parameters=false",
        launcher=launcher,
    )
    logs = two_rank_gru_logs(run)
    for entry in logs:
        assert entry["gru/cos_after"] >= -1e-6
        assert entry["gru/ref_norm"] > 0
