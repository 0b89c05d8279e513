"""Sample photographs from scikit-image by name (``sample:NAME``): loaded when it is installed, one clear line when it is not."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from bodycorr.cli.main import main
from bodycorr.common.errors import BodycorrError
from bodycorr.data import samples


def test_an_unknown_sample_names_the_known_ones(tmp_path, capsys):
    with pytest.raises(BodycorrError, match="sample:astronaut"):
        samples.check_sample("sample:nobody")
    assert main(["image", "sample:nobody", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bodycorr: error: sample:nobody: no such sample") and "sample:coffee (no person)" in err[0]


def test_without_scikit_image_the_command_says_how_to_get_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage -> ImportError; find_spec -> None
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(BodycorrError, match="pip install scikit-image"):
        samples.load_sample("sample:astronaut")
    assert main(["image", "sample:astronaut", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install scikit-image" in err[0]
    assert not (tmp_path / "o").exists()  # refused before any work


def test_samples_load_as_rgb_and_a_real_file_wins(tmp_path, monkeypatch):
    pytest.importorskip("skimage")
    for name in samples.SAMPLES:
        rgb = samples.load_sample(samples.PREFIX + name)
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8 and min(rgb.shape[:2]) >= 256
    assert samples.is_sample("sample:astronaut") and not samples.is_sample("astronaut.png")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sample:astronaut").write_bytes(b"")
    assert not samples.is_sample("sample:astronaut")  # a file of that name is read as a file
