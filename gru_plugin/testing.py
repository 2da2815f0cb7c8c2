"""Support for this package's own tests and benchmarks (not needed to use GRU).

Here because the unit tests (``tests/``), the host tests (``integration_tests/``)
and the benchmarks are separate trees that share no module but this package.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _deepspeed_shm_buffers() -> set[Path]:
    return set(Path("/dev/shm").glob("deepspeed_allreduce_buffer*"))


@contextmanager
def deepspeed_shm_cleanup() -> Iterator[None]:
    """Unlink the /dev/shm buffers that DeepSpeed's CPU all-reduce creates inside
    the block: it never unlinks them (0.15: ~135 MB each), and /dev/shm fills up.
    Buffers that existed before are left alone (another run may own them)."""
    before = _deepspeed_shm_buffers()
    try:
        yield
    finally:
        for buffer in _deepspeed_shm_buffers() - before:
            buffer.unlink(missing_ok=True)
