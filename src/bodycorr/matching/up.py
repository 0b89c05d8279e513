"""The up axis of a scan in any orientation: principal axes as candidates, the network as the judge."""

from __future__ import annotations

import numpy as np

from bodycorr.common.errors import BodycorrError
from bodycorr.matching.extract import DescriptorExtractor
from bodycorr.matching.inputs import ScanInput

_AXES = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}


def parse_up(text: str) -> np.ndarray:
    """"z", "-y", "+x" or "0,0,1" -> (3,) unit vector."""
    t = text.strip().lower()
    sign = -1.0 if t.startswith("-") else 1.0
    key = t.lstrip("+-")
    if key in _AXES:
        return sign * np.array(_AXES[key])
    try:
        v = np.array([float(s) for s in t.split(",")])
        if v.shape == (3,) and np.linalg.norm(v) > 0:
            return v / np.linalg.norm(v)
    except ValueError:
        pass
    raise BodycorrError(f"--up {text!r}: give x, y, z (optionally with a sign, e.g. -y), three comma-separated numbers, or auto.")


def candidate_axes(points: np.ndarray, count: int = 2) -> list[np.ndarray]:
    """± the ``count`` main principal axes of the points (a body is longest along its height)."""
    c = points - points.mean(0)
    _, _, vt = np.linalg.svd(c[:: max(1, len(c) // 20000)], full_matrices=False)
    return [s * vt[i] for i in range(count) for s in (1.0, -1.0)]


def estimate_up(scan: ScanInput, extractor: DescriptorExtractor, views: int = 8) -> np.ndarray:
    """Pick the candidate up axis under which the network's descriptors agree most across views.

    Rendered upside down or on its side, a body gives the network inputs it never saw in training
    and the views disagree; upright, they agree. Score = mean multi-view consistency.
    """
    best, best_score = None, -1.0
    for axis in candidate_axes(scan.points):
        if scan.kind == "mesh":
            vd = extractor.mesh(scan.mesh, views, axis)
        else:
            vd = extractor.point_cloud(scan.cloud, views, axis)
        score = float(np.mean(vd.consistency[vd.seen > 0]))
        if score > best_score:
            best, best_score = axis, score
    return best
