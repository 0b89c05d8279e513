"""Classification targets on the template: random patch segmentations, key-point regions, body parts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bodycorr.body.template import Template
from bodycorr.common.cache import cached_arrays, content_hash
from bodycorr.geometry.geodesic import GeodesicSolver
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
        seed: segmentation seed.
    """

    num_segmentations: int = 100
    num_patches: int = 500
    num_random_seeds: int = 10
    keypoint_radius: float = 0.05
    parts_task: bool = True
    seed: int = 0


@dataclass(frozen=True, eq=False)
class Targets:
    """Per-template-vertex labels.

    Attributes:
        segmentations: (K', Vt) int64 patch label of each vertex per task (K' = K [+ 1 for parts]).
        keypoints: (Vt,) int64 landmark label, ``num_landmarks`` = background.
        num_landmarks: number of landmarks (33).
    """

    segmentations: np.ndarray
    keypoints: np.ndarray
    num_landmarks: int

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
        ).astype(np.int64)
        if config.parts_task:
            segs = np.concatenate([segs, template.parts.astype(np.int64)[None]], axis=0)
        return {"segmentations": segs, "keypoints": keypoint_labels(template, config.keypoint_radius)}

    a = cached_arrays("targets", key, build)
    return Targets(segmentations=a["segmentations"], keypoints=a["keypoints"], num_landmarks=len(template.landmarks))

