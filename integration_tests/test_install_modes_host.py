"""``+gru=default`` fires in the real host from an editable install
(``pip install -e``) exactly as from a regular one."""

from __future__ import annotations

import pytest
from environments import MODES, make_environment
from test_host_methods import assert_gru_run


@pytest.mark.parametrize("mode", MODES)
def test_plus_gru_fires_in_the_host(mode, run_host, tmp_path_factory):
    python = make_environment(tmp_path_factory.mktemp(mode) / "env", mode)
    run = run_host(
        "trainer=GradDiff",
        "+gru=default",
        executable=str(python.with_name("gru-unlearn")),
    )
    assert_gru_run(run)
