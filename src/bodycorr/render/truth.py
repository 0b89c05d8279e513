"""Per-pixel ground truth on the template for rendered bodies (triangle, barycentrics, vertex)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bodycorr.body.template import Template
from bodycorr.render.frame import Frame


@dataclass(frozen=True, eq=False)
class BodyTruth:
    """Where each pixel lies on the template.

    Attributes:
        template_face: (H, W) int32 template triangle, -1 where there is no truth.
        template_bary: (H, W, 3) float32 barycentrics in that triangle.
        template_vertex: (H, W) int32 nearest template vertex (largest barycentric), -1 = none.
    """

    template_face: np.ndarray
    template_bary: np.ndarray
    template_vertex: np.ndarray


def body_truth(frame: Frame, template: Template) -> BodyTruth:
    """Map a frame rendered from a generated Anny body (full topology) onto the template."""
    h, w = frame.face.shape
    idx = np.flatnonzero(frame.face.reshape(-1) >= 0)  # the seen pixels, row-major
    tf = np.full(h * w, -1, dtype=np.int32)
    tb = np.zeros((h * w, 3), dtype=np.float32)
    tv = np.full(h * w, -1, dtype=np.int32)
    if len(idx):
        f, b, v = template.map_full_points(frame.face.reshape(-1)[idx], frame.bary.reshape(-1, 3)[idx])
        tf[idx], tb[idx], tv[idx] = f, b, v
    return BodyTruth(template_face=tf.reshape(h, w), template_bary=tb.reshape(h, w, 3), template_vertex=tv.reshape(h, w))
