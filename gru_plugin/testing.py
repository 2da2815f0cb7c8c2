"""Support for this package's own tests and benchmarks (not needed to use GRU).

Here because the unit tests (``tests/``), the host tests (``integration_tests/``)
and the benchmarks are separate trees that share no module but this package.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEARDOWN_ABORT = "terminate called without an active exception"
"""What a rank prints when it aborts as it exits, after its work is done. Seen now
and then on a loaded 2-core machine with transformers >= 4.46 (torch 2.13, gloo),
for toy and host runs alike, never on transformers 4.45."""


def run_processes(command: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run`` (text output captured) of a run that may start several
    ranks: repeated once, whole, if a rank aborted at exit; never excused."""
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode != 0 and TEARDOWN_ABORT in done.stderr:
        done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    return done


def _deepspeed_shm_buffers() -> set[Path]:
    return set(Path("/dev/shm").glob("deepspeed_allreduce_buffer*"))


def _mapped_files() -> set[str]:
    """The files some live process has mapped (what /proc/*/maps name)."""
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            lines = maps.read_text().splitlines()
        except OSError:  # the process has gone, or is not ours to read
            continue
        mapped.update(
            line.split(maxsplit=5)[-1] for line in lines if "/dev/shm/" in line
        )
    return mapped


@contextmanager
def deepspeed_shm_cleanup() -> Iterator[None]:
    """Unlink the /dev/shm buffers that DeepSpeed's CPU all-reduce creates inside
    the block: it never unlinks them (0.15: ~135 MB each), and /dev/shm fills up.
    Buffers that existed before are left alone, and so is any that a live process
    still maps: another run's, which its other ranks may yet open by name (they
    wait for it to appear)."""
    before = _deepspeed_shm_buffers()
    try:
        yield
    finally:
        in_use = _mapped_files()
        for buffer in _deepspeed_shm_buffers() - before:
            if str(buffer) not in in_use:
                buffer.unlink(missing_ok=True)


def forget_engine_state() -> None:
    """Let the next run of this process pick its own engine: accelerate keeps the
    first run's in process-wide state and environment variables, transformers its
    DeepSpeed config."""
    from accelerate.state import AcceleratorState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    AcceleratorState._reset_state(reset_partial_state=True)
    unset_hf_deepspeed_config()
    for name in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP"):
        os.environ.pop(name, None)
