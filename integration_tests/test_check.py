"""``gru-plugin check`` passes where the plugin is installed beside the host."""

from __future__ import annotations

import subprocess

from host_runs import GRU_PLUGIN, HOST


def test_check_passes_with_the_host():
    done = subprocess.run(
        [GRU_PLUGIN, "check", f"--host={HOST}"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: Hydra discovers gru-plugin" in done.stdout
