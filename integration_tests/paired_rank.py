"""``gru-unlearn`` on one rank, with the host's retain rows made comparable.

    python integration_tests/paired_rank.py --host=DIR OPTION... OVERRIDE...

The host's ``ForgetRetainDataset`` draws the retain row of each forget row from
the rank's own random numbers, so 2 ranks see other retain rows than 1 rank. Here
the retain row is a function of the forget row's index, the same on any number of
ranks; everything else is the host's. With ``GRU_TEST_FSDP_ON_CPU=1`` accelerate
may also choose FSDP on CPU ranks (``tests/ddp_worker.allow_fsdp_on_cpu``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gru_plugin.cli import find_host, gru_unlearn


def pair_retain_rows_by_index(host: Path) -> None:
    sys.path.insert(0, str(host / "src"))
    from data.unlearn import ForgetRetainDataset

    def paired(self, index: int) -> dict:
        return {
            "forget": self.forget[index],
            "retain": self.retain[index % len(self.retain)],
        }

    ForgetRetainDataset.__getitem__ = paired


def main() -> None:
    host = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--host="))
    pair_retain_rows_by_index(find_host(host))
    if os.environ.get("GRU_TEST_FSDP_ON_CPU") == "1":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from ddp_worker import allow_fsdp_on_cpu

        allow_fsdp_on_cpu()
    gru_unlearn(sys.argv[1:])


if __name__ == "__main__":
    main()
