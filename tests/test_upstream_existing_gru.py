"""``gru-plugin upstream`` never overwrites another GRU in the target host.

The host here is a stand-in with the paths open-unlearning pull request #83 adds,
holding placeholder text (not the pull request's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gru_plugin.upstream import write_bundle

HOST_INIT = """from trainer.unlearn.grad_ascent import GradAscent
from trainer.unlearn.grad_diff import GradDiff
{import_}

def _register_trainer(trainer_class):
    TRAINER_REGISTRY[trainer_class.__name__] = trainer_class


_register_trainer(GradAscent)
_register_trainer(GradDiff)
{register}"""

PR83_FILES = {
    "src/trainer/unlearn/gru.py": "class GRU:  # placeholder\n    pass\n",
    "configs/trainer/GRU.yaml": "handler: GRU  # placeholder\n",
    "community/methods/GRU/README.md": "# GRU (placeholder)\n",
    "community/methods/GRU/run.sh": "# placeholder\n",
}
PR83_INIT = HOST_INIT.format(
    import_="from trainer.unlearn.gru import GRU", register="_register_trainer(GRU)\n"
)


def make_host(root: Path, files: dict[str, str], init: str) -> Path:
    for relative, text in {**files, "src/trainer/__init__.py": init}.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def snapshot(root: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}


PLAIN_INIT = HOST_INIT.format(import_="", register="")


def test_host_with_pull_request_83_is_refused_untouched(tmp_path):
    host = make_host(tmp_path, PR83_FILES, PR83_INIT)
    before = snapshot(host)
    with pytest.raises(SystemExit) as stopped:
        write_bundle(host)
    message = str(stopped.value)
    assert "already has a GRU, so nothing was written" in message
    for clash in [
        "src/trainer/unlearn/gru.py exists",
        "configs/trainer/GRU.yaml exists",
        "community/methods/GRU/README.md exists",
        "community/methods/GRU/run.sh exists",
        "src/trainer/__init__.py imports or registers a GRU",
    ]:
        assert clash in message
    assert snapshot(host) == before


@pytest.mark.parametrize(
    "files, init",
    [
        ({"src/trainer/unlearn/gru.py": "# someone's GRU\n"}, PLAIN_INIT),
        ({"configs/trainer/GRU.yaml": "handler: GRU\n"}, PLAIN_INIT),
        ({"community/methods/GRU/README.md": "# GRU\n"}, PLAIN_INIT),
        ({}, HOST_INIT.format(import_="", register="_register_trainer(GRU)\n")),
        (
            {},
            HOST_INIT.format(
                import_="from trainer.unlearn.gru import GRU", register=""
            ),
        ),
    ],
    ids=["module", "config", "community", "registration", "import"],
)
def test_any_sign_of_another_gru_stops_it(tmp_path, files, init):
    host = make_host(tmp_path, files, init)
    before = snapshot(host)
    with pytest.raises(SystemExit, match="already has a GRU"):
        write_bundle(host)
    assert snapshot(host) == before


def test_its_own_bundle_can_be_written_again(tmp_path):
    host = make_host(tmp_path, {}, PLAIN_INIT)
    write_bundle(host)
    written = snapshot(host)
    assert write_bundle(host)  # the same files again, and the init untouched
    assert snapshot(host) == written
    assert (
        written[host / "src/trainer/__init__.py"].count(b"_register_trainer(NPO_GRU)")
        == 1
    )
