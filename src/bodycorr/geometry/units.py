"""Length units of body geometry: detect metres / centimetres / millimetres from a body's size."""

from __future__ import annotations

from typing import Literal

import numpy as np

from bodycorr.common.errors import BodycorrError

Unit = Literal["m", "cm", "mm"]

#: Metres per file unit.
UNIT_SCALE: dict[str, float] = {"m": 1.0, "cm": 0.01, "mm": 0.001}

#: Plausible largest bounding-box side of body geometry, in metres: from a partial scan of a
#: hand or forearm (0.1 m) to a person with raised arms or a lying person (2.6 m).
BODY_EXTENT_M: tuple[float, float] = (0.1, 2.6)

#: Typical body size used to break ties between two plausible units (metres).
_TYPICAL_EXTENT_M = 1.7


def extent(points: np.ndarray) -> float:
    """Largest side of the axis-aligned bounding box. points: (N, 3) -> float, in the points' units."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if p.shape[0] == 0:
        return 0.0
    return float((p.max(axis=0) - p.min(axis=0)).max())


def detect_units(points: np.ndarray, name: str = "points") -> Unit:
    """Guess the unit of body geometry from its size.

    Rule: let ``E`` be the largest side of the bounding box (:func:`extent`). A unit fits when
    ``E`` converted to metres lies in :data:`BODY_EXTENT_M` = [0.1, 2.6] m, i.e.
    ``"m"`` for E in [0.1, 2.6], ``"cm"`` for E in [10, 260], ``"mm"`` for E in [100, 2600].
    Where two units fit (E in [100, 260]: a whole body in cm or a 10-26 cm part in mm) the one
    giving a size closest to a typical 1.7 m body wins, i.e. cm. So a small body part stored in mm
    (say a 15 cm hand) must be loaded with an explicit ``units="mm"``.

    Args:
        points: (N, 3) coordinates in unknown units (N >= 2, finite).
        name: what and where, for the error message (e.g. ``"mesh scan.ply"``).

    Returns:
        ``"m"``, ``"cm"`` or ``"mm"``.

    Raises:
        BodycorrError: the size fits no unit (e.g. extent 0.001 or 1e5).
    """
    e = extent(points)
    lo, hi = BODY_EXTENT_M
    fits = [u for u, s in UNIT_SCALE.items() if lo <= e * s <= hi]
    if not fits:
        raise BodycorrError(
            f"{name}: its size {e:.4g} (largest side of the bounding box) fits no unit for a human body "
            f"({lo:g}-{hi:g} as m, {lo * 100:g}-{hi * 100:g} as cm, {lo * 1000:g}-{hi * 1000:g} as mm). "
            "Pass units='m', 'cm' or 'mm' explicitly, or check that the file holds a body."
        )
    return min(fits, key=lambda u: abs(np.log(e * UNIT_SCALE[u] / _TYPICAL_EXTENT_M)))  # type: ignore[return-value]


def resolve_units(points: np.ndarray, units: str, name: str = "points") -> Unit:
    """Check ``units`` ("auto", "m", "cm" or "mm") and resolve "auto" with :func:`detect_units`.

    points: (N, 3) coordinates in the file's units. Raises one line on an unknown unit name or
    when "auto" finds no plausible unit.
    """
    if units == "auto":
        return detect_units(points, name)
    if units not in UNIT_SCALE:
        raise BodycorrError(f"{name}: unknown units {units!r}. Use 'auto', 'm', 'cm' or 'mm'.")
    return units  # type: ignore[return-value]


def to_metres(points: np.ndarray, units: str) -> np.ndarray:
    """Convert coordinates to metres. points: (..., 3) in ``units`` ("m", "cm" or "mm") -> new float64 array, metres."""
    if units not in UNIT_SCALE:
        raise BodycorrError(f"unknown units {units!r}. Use 'm', 'cm' or 'mm'.")
    return np.asarray(points, dtype=np.float64) * UNIT_SCALE[units]
