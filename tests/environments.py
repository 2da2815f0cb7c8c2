"""Installs for the tests: throwaway environments with this working tree installed
(regular or editable), and stand-in third-party strategy packages.

A throwaway environment is a venv that sees the current environment's packages
(torch, hydra, the host's requirements) through symlinks, minus any installed
gru-plugin, so what it imports of ours comes from its own install only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "gru_plugin", "configs", "hydra_plugins")
"""What a regular install is built from (copied, so the build writes nowhere here)."""

MODES = ("regular", "editable")


def isolated_env() -> dict[str, str]:
    """This process's environment variables, less a PYTHONPATH that would mix
    another copy of the package into a throwaway environment."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def _is_ours(name: str) -> bool:
    return "gru_plugin" in name.replace("-", "_").lower()


def _link_current_packages(site: Path) -> None:
    current = Path(sysconfig.get_path("purelib"))
    for entry in current.iterdir():
        if _is_ours(entry.name):
            continue
        if entry.name == "hydra_plugins":  # a namespace: other plugins stay
            (site / entry.name).mkdir()
            for plugin in entry.iterdir():
                if not _is_ours(plugin.name):
                    (site / entry.name / plugin.name).symlink_to(plugin)
        else:
            (site / entry.name).symlink_to(entry)


def make_environment(root: Path, mode: str) -> Path:
    """A venv at ``root`` with this working tree installed; returns its python."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose one of {MODES}")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": root, "platbase": root}))
    _link_current_packages(site)
    python = root / "bin" / "python"
    if mode == "editable":
        target = ["-e", str(REPO)]
    else:
        copy = root / "source"
        copy.mkdir()
        for name in SOURCES:
            if (REPO / name).is_dir():
                ignore = shutil.ignore_patterns("__pycache__")
                shutil.copytree(REPO / name, copy / name, ignore=ignore)
            else:
                shutil.copy2(REPO / name, copy / name)
        target = [str(copy)]
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + target,
        check=True,
        capture_output=True,
        env=isolated_env(),
    )
    return python


def install_fake_package(site: Path, name: str, source: str) -> None:
    """An installed distribution ``name`` whose one module is a gru_plugin entry
    point (what ``pip install`` would leave in site-packages)."""
    module = name.replace("-", "_")
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(f"[gru_plugin]\n{module} = {module}\n")
