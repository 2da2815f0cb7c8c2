"""Several ``gru-unlearn`` runs, one after another, in one process.

    python integration_tests/host_worker.py RUNS.json

RUNS.json lists runs, each ``{"argv": [...], "log": PATH}``: the options of one
``gru-unlearn`` call and where its output goes. Starting Python, torch,
transformers, DeepSpeed and the host's modules costs about as much as a short
tiny-model run, so the runs of a test module share one process (as
``tests/ddp_worker.py`` does for the toy trainer). Every run goes through the
console script's own code, Hydra's ``main`` included, and seeds itself as the host
does; process-wide state that outlives a run (accelerate's, transformers'
DeepSpeed config) is reset between runs. Each run's stdout and stderr, at the file
descriptor level, go to its log; a run that succeeds leaves ``<log>.ok`` beside
it, one that fails its traceback in the log, and the next run goes on.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

from gru_plugin.cli import gru_unlearn
from gru_plugin.testing import forget_engine_state


@contextmanager
def output_to(log: Path):
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("w") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def forget_process_state() -> None:
    """What a run leaves behind that the next would otherwise inherit: the
    engine's state (as between ``tests/ddp_worker.py``'s runs) and Hydra's."""
    from hydra.core.global_hydra import GlobalHydra

    forget_engine_state()
    GlobalHydra.instance().clear()


def main() -> None:
    argv0 = sys.argv[0]
    for run in json.loads(Path(sys.argv[1]).read_text()):
        log = Path(run["log"])
        with output_to(log):
            try:
                gru_unlearn(run["argv"])
                log.with_suffix(".ok").touch()
            except BaseException:  # SystemExit too: Hydra exits on a failed run
                traceback.print_exc()
        sys.argv = [argv0]
        forget_process_state()


if __name__ == "__main__":
    main()
