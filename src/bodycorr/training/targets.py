"""Classification targets on the template: random patch segmentations, key-point regions, body parts, dense points."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bodycorr.body.template import Template
from bodycorr.common.cache import cached_arrays, content_hash
from bodycorr.geometry.geodesic import GeodesicSolver
from bodycorr.geometry.sampling import farthest_point_sampling
from bodycorr.geometry.segmentation import SegmentationConfig, random_segmentations


@dataclass(frozen=True)
class TargetConfig:
    """What the descriptor is trained to classify.

    Attributes:
        num_segmentations: K random segmentations (Wei et al.: 100).
        num_patches: P patches each (Wei et al.: 500).
        num_random_seeds: random centres per segmentation before farthest-point sampling.
        keypoint_radius: a vertex within this geodesic distance (m) of a landmark takes its label.
        parts_task: add the 14 body parts (left/right aware) as one more segmentation task.
        seed: segmentation seed (and the dense points' start).
        dense_points: S template points (geodesic farthest-point samples) for the dense objective
            (each pixel classified against all S at once, targets softened by geodesic distance);
            0 = none.
        dense_sigma: width (m) of the dense targets: point j's target weight is
            ``exp(-g(v, j)^2 / (2 sigma^2))``, normalised, for a pixel whose true vertex is v.
    """

    num_segmentations: int = 100
    num_patches: int = 500
    num_random_seeds: int = 10
    keypoint_radius: float = 0.05
    parts_task: bool = True
    seed: int = 0
    dense_points: int = 0
    dense_sigma: float = 0.04


@dataclass(frozen=True, eq=False)
class Targets:
    """Per-template-vertex labels.

    Attributes:
        segmentations: (K', Vt) int64 patch label of each vertex per task (K' = K [+ 1 for parts]).
        keypoints: (Vt,) int64 landmark label, ``num_landmarks`` = background.
        num_landmarks: number of landmarks (33).
        dense_vertices: (S,) int64 template vertices of the dense points (S may be 0).
        dense_geodesic: (Vt, S) float16 geodesic distance (m) from every vertex to each dense point.
    """

    segmentations: np.ndarray
    keypoints: np.ndarray
    num_landmarks: int
    dense_vertices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    dense_geodesic: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float16))

    @property
    def num_dense(self) -> int:
        return int(self.dense_vertices.shape[0])

    @property
    def num_patches(self) -> int:
        """Classes per segmentation task (1 when there are none, so heads can still be built)."""
        return int(self.segmentations.max()) + 1 if self.segmentations.size else 1

    @property
    def num_tasks(self) -> int:
        return int(self.segmentations.shape[0])


def keypoint_labels(template: Template, radius: float) -> np.ndarray:
    """(Vt,) label of the nearest landmark within ``radius`` metres (geodesic), else len(landmarks)."""
    solver = GeodesicSolver(template.mesh, method="heat")
    d = solver.from_sources(template.landmarks)  # (33, Vt)
    nearest = d.argmin(0)
    return np.where(d.min(0) <= radius, nearest, len(template.landmarks)).astype(np.int64)


def build_targets(template: Template, config: TargetConfig) -> Targets:
    """Labels for every template vertex (cached on disk by content hash)."""
    key = content_hash("targets", template.mesh.vertices, template.mesh.faces, template.landmarks, repr(config))

    def build() -> dict[str, np.ndarray]:
        segs = random_segmentations(
            template.mesh,
            SegmentationConfig(
                num_segmentations=config.num_segmentations,
                num_patches=config.num_patches,
                num_random_seeds=config.num_random_seeds,
                seed=config.seed,
            ),
        ).astype(np.int64) if config.num_segmentations > 0 else np.zeros((0, template.num_vertices), np.int64)
        if config.parts_task:
            segs = np.concatenate([segs, template.parts.astype(np.int64)[None]], axis=0)
        out = {"segmentations": segs, "keypoints": keypoint_labels(template, config.keypoint_radius)}
        out["dense_vertices"], out["dense_geodesic"] = dense_points(template, config.dense_points, config.seed)
        return out

    a = cached_arrays("targets", key, build)
    return Targets(segmentations=a["segmentations"], keypoints=a["keypoints"], num_landmarks=len(template.landmarks),
                   dense_vertices=a["dense_vertices"], dense_geodesic=a["dense_geodesic"])  # fmt: skip


def dense_points(template: Template, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` geodesic farthest-point samples of the template and every vertex's distance to them.

    Returns (S,) int64 vertices and (Vt, S) float16 distances in metres (S = ``count``; 0 gives empty arrays).
    """
    if count <= 0:
        return np.zeros(0, np.int64), np.zeros((template.num_vertices, 0), np.float16)
    solver = GeodesicSolver(template.mesh, method="graph", progress=False)
    idx = farthest_point_sampling(solver, count, seed=seed)
    d = solver.from_sources(idx).T  # (Vt, S)
    return idx.astype(np.int64), d.astype(np.float16)

