"""Real photographs shipped inside scikit-image (optional), by name: ``bodycorr image sample:astronaut``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from bodycorr.common.errors import BodycorrError

PREFIX = "sample:"

#: name -> (shows a person, what it shows). Each is a ``skimage.data`` function reading a file
#: bundled in the scikit-image wheel (nothing is downloaded).
SAMPLES: dict[str, tuple[bool, str]] = {
    "astronaut": (True, "Eileen Collins in her flight suit, NASA portrait, 512x512 (public domain)"),
    "camera": (True, "a man with a camera on a tripod, grey, 512x512"),
    "chelsea": (False, "a cat, 451x300"),
    "coffee": (False, "a cup of coffee on a saucer, 600x400"),
    "rocket": (False, "a rocket on its launch pad, 640x427"),
}


def is_sample(arg: str | Path) -> bool:
    """``sample:NAME`` that is not the name of an existing file."""
    return str(arg).startswith(PREFIX) and not Path(arg).exists()


def check_sample(arg: str | Path) -> str:
    """The NAME of ``sample:NAME``, once it is known and scikit-image is installed (no import; one clear line otherwise)."""
    name = str(arg)[len(PREFIX) :]
    if name not in SAMPLES:
        known = ", ".join(f"{PREFIX}{n} ({'person' if p else 'no person'})" for n, (p, _) in SAMPLES.items())
        raise BodycorrError(f"{arg}: no such sample photograph. Use one of {known}.")
    if importlib.util.find_spec("skimage") is None:
        raise BodycorrError(f"{arg}: the sample photographs come with scikit-image, which is not installed. "
                            "Install it (pip install scikit-image) or give an image file.")  # fmt: skip
    return name


def load_sample(arg: str | Path) -> np.ndarray:
    """The photograph ``sample:NAME`` as (H, W, 3) uint8 RGB (grey ones repeated to three channels)."""
    name = check_sample(arg)
    try:
        import skimage.data
    except ImportError:
        raise BodycorrError(f"{arg}: scikit-image cannot be imported. Reinstall it (pip install scikit-image) or give an image file.") from None
    rgb = np.asarray(getattr(skimage.data, name)())
    return np.repeat(rgb[..., None], 3, axis=2) if rgb.ndim == 2 else rgb[..., :3]
