"""The installed environment is the pinned one (constraints.txt): the same versions on every machine."""

from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
NOT_PINNED = {"pip", "setuptools", "wheel", "bodycorr"}  # the installer itself and the project


def _pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            out[canonicalize_name(req.name)] = spec.version
    return out


def test_every_installed_package_is_pinned_at_its_version():
    pins = _pins()
    if not (ROOT / ".venv").exists():
        pytest.skip("not the project's own environment (no .venv): nothing to compare")
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {n: (v, pins[n]) for n, v in installed.items() if n in pins and v != pins[n]}
    unpinned = sorted(n for n in installed if n not in pins and n not in NOT_PINNED)
    assert not wrong, f"installed versions differ from constraints.txt (installed, pinned): {wrong}; run make setup again"
    assert not unpinned, f"installed but not pinned in constraints.txt: {unpinned}; run make constraints"
