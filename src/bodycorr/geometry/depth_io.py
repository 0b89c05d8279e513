"""Depth maps on disk: 16-bit PNG in millimetres, or NPY (float metres or integer millimetres)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bodycorr.common.errors import BodycorrError, check_readable
from bodycorr.common.fileio import write_bytes_atomic

DEPTH_SUFFIXES = (".png", ".npy")

#: A float depth map whose median valid value exceeds this is taken to be in millimetres
#: (no body sensor sees 20 m; no body is 20 mm from it).
MM_MEDIAN_THRESHOLD = 20.0

_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I")
_MAX_PNG_MM = np.iinfo(np.uint16).max


def load_depth(path: str | Path, units: str = "auto") -> np.ndarray:
    """Read a depth map as metres.

    Args:
        path: ``.png`` (16-bit grayscale, millimetres) or ``.npy`` ((H, W) or (H, W, 1), float
            metres or integer millimetres).
        units: "auto", "m" or "mm". "auto": integer data is mm; float data is mm when the median
            valid value exceeds :data:`MM_MEDIAN_THRESHOLD` (20), else metres.

    Returns:
        (H, W) float32 depth in metres (camera z), 0 where there is no data (0, NaN or inf in the file).

    Raises:
        BodycorrError: missing/empty/unreadable file, unknown extension, 8-bit image, wrong shape,
        negative values, or no valid pixel.
    """
    p = check_readable(path, "depth map")
    where = f"depth map {p}"
    if units not in ("auto", "m", "mm"):
        raise BodycorrError(f"{where}: unknown units {units!r}. Use 'auto', 'm' or 'mm'.")
    suffix = p.suffix.lower()
    if suffix == ".png":
        arr = _read_png(p, where)
    elif suffix == ".npy":
        from bodycorr.geometry.io import read_npy

        arr = read_npy(p, "depth map", "Save it with numpy.save as an (H, W) array.")
    else:
        raise BodycorrError(f"{where}: unknown format {suffix or '(no extension)'!r}. Use .png (16-bit, mm) or .npy (metres).")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise BodycorrError(f"{where}: expected an (H, W) numeric array, got {arr.dtype} {arr.shape}. Save one depth value per pixel.")
    is_int = np.issubdtype(arr.dtype, np.integer)
    d = arr.astype(np.float64)
    finite = np.isfinite(d)
    if not finite.any():
        raise BodycorrError(f"{where}: every pixel is NaN or infinite; the depth map has no valid pixels. Check the export.")
    negative = int((d[finite] < 0).sum())
    if negative:
        raise BodycorrError(f"{where}: {negative} pixels have negative depth. Depth must be >= 0, with 0 for no data.")
    valid = finite & (d > 0)
    if not valid.any():
        raise BodycorrError(f"{where}: depth map has no valid pixels (all zero). Check the export or the camera.")
    if units == "auto":
        units = "mm" if is_int or float(np.median(d[valid])) > MM_MEDIAN_THRESHOLD else "m"
    scale = 0.001 if units == "mm" else 1.0
    return np.where(valid, d * scale, 0.0).astype(np.float32)


def _read_png(p: Path, where: str) -> np.ndarray:
    try:
        with Image.open(p) as im:
            im.load()
            mode, arr = im.mode, np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BodycorrError(f"{where}: cannot read the image ({str(e).splitlines()[0][:80]}). The file is corrupt; re-save it.") from None
    if mode not in _16BIT_MODES:
        raise BodycorrError(
            f"{where}: looks like an 8-bit image (mode {mode}), not a depth map; "
            "save depth as 16-bit PNG in millimetres or .npy in metres."
        )
    return arr


def save_depth(path: str | Path, depth: np.ndarray) -> Path:
    """Write a depth map atomically.

    Args:
        path: ``.png`` -> 16-bit grayscale millimetres (rounded to 1 mm, max 65.535 m);
            ``.npy`` -> (H, W) float32 metres.
        depth: (H, W) float metres; 0, NaN or inf = no data (written as 0).
    """
    p = Path(path)
    d = np.asarray(depth, dtype=np.float64)
    if d.ndim != 2 or d.size == 0:
        raise BodycorrError(f"depth map {p}: expected an (H, W) array, got shape {d.shape}. Pass one depth value per pixel.")
    d = np.where(np.isfinite(d), d, 0.0)
    if (d < 0).any():
        raise BodycorrError(f"depth map {p}: {int((d < 0).sum())} pixels have negative depth. Use 0 for no data.")
    suffix = p.suffix.lower()
    buf = io.BytesIO()
    if suffix == ".png":
        mm = np.rint(d * 1000.0)
        if mm.max() > _MAX_PNG_MM:
            raise BodycorrError(
                f"depth map {p}: depth up to {d.max():.1f} m does not fit a 16-bit millimetre PNG (max 65.535 m). Save as .npy."
            )
        Image.fromarray(mm.astype(np.uint16)).save(buf, format="PNG")
    elif suffix == ".npy":
        np.save(buf, d.astype(np.float32), allow_pickle=False)
    else:
        raise BodycorrError(f"depth map {p}: cannot write format {suffix or '(no extension)'!r}. Use .png (16-bit mm) or .npy (metres).")
    return write_bytes_atomic(p, buf.getvalue())
