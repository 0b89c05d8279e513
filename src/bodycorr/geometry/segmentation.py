"""Random patch segmentations of a body surface (Wei et al. 2016, "Dense Human Body Correspondences
Using Convolutional Networks"): the descriptor is trained as an ensemble of classification tasks, one
per segmentation of the template into ``num_patches`` geodesic Voronoi cells.

Each segmentation draws ``num_random_seeds`` random vertices, extends them to ``num_patches`` centres
by geodesic farthest-point sampling, and labels every vertex by its geodesically nearest centre. All
distances come from the cached all-pairs table (:func:`all_pairs_geodesics`), which makes each
segmentation cost a few tens of milliseconds once the table exists.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from bodycorr.common.cache import cached_arrays, content_hash
from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.geodesic import GEODESIC_METHODS, GeodesicMethod, all_pairs_geodesics
from bodycorr.geometry.mesh import Mesh
from bodycorr.geometry.sampling import farthest_point_sampling

_SEGMENTATION_VERSION = 1


@dataclass(frozen=True)
class SegmentationConfig:
    """How to draw random segmentations.

    Attributes:
        num_segmentations: K, number of independent segmentations (classification tasks).
        num_patches: P, patches (classes) per segmentation; at most 32767 (labels are int16).
        num_random_seeds: centres drawn uniformly at random among vertices; the remaining
            ``num_patches - num_random_seeds`` come from geodesic farthest-point sampling.
        seed: master seed; segmentation i uses ``SeedSequence(seed).spawn(K)[i]``, so its result does
            not depend on K.
        geodesic_method: which all-pairs table the cells are computed on.
    """

    num_segmentations: int = 100
    num_patches: int = 500
    num_random_seeds: int = 10
    seed: int = 0
    geodesic_method: GeodesicMethod = "graph"

    def __post_init__(self) -> None:
        if self.num_segmentations < 1:
            raise BodycorrError(f"SegmentationConfig: num_segmentations must be >= 1, got {self.num_segmentations}.")
        if not 1 <= self.num_patches <= np.iinfo(np.int16).max:
            raise BodycorrError(f"SegmentationConfig: num_patches must be in [1, 32767], got {self.num_patches}.")
        if not 1 <= self.num_random_seeds <= self.num_patches:
            raise BodycorrError(
                f"SegmentationConfig: num_random_seeds must be in [1, num_patches={self.num_patches}], "
                f"got {self.num_random_seeds}."
            )
        if self.geodesic_method not in GEODESIC_METHODS:
            raise BodycorrError(
                f"SegmentationConfig: unknown geodesic_method {self.geodesic_method!r}. Use one of {', '.join(GEODESIC_METHODS)}."
            )


@dataclass(frozen=True, eq=False)
class Segmentations:
    """K random segmentations of one mesh.

    Attributes:
        labels: (K, V) int16 patch id of every vertex in every segmentation, in [0, P); -1 only for a
            vertex that no centre reaches (a mesh with more components than patches).
        centres: (K, P) int64 vertex index of each patch centre (patch p of segmentation k is the
            Voronoi cell of ``centres[k, p]``).
        config: the config that produced them.
    """

    labels: np.ndarray
    centres: np.ndarray
    config: SegmentationConfig

    @property
    def num_segmentations(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_patches(self) -> int:
        return int(self.centres.shape[1])


def voronoi_labels(distances: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(V,) int64 index into ``centres`` of each vertex's nearest centre (ties: the earlier centre).

    distances: (V, V) table (any float dtype); centres: (P,) vertex indices. Vertices no centre reaches
    (all distances ``inf``) get -1.
    """
    rows = distances[np.asarray(centres)]  # (P, V)
    lab = np.argmin(rows, axis=0).astype(np.int64)
    unreached = ~np.isfinite(rows[lab, np.arange(rows.shape[1])])
    lab[unreached] = -1
    return lab


def _build(mesh: Mesh, config: SegmentationConfig, progress: bool) -> dict[str, np.ndarray]:
    n = mesh.num_vertices
    if config.num_patches > n:
        raise BodycorrError(
            f"segmentation of {mesh.name}: {config.num_patches} patches but only {n} vertices. Lower num_patches."
        )
    dist = all_pairs_geodesics(mesh, config.geodesic_method, progress=progress)
    K, P = config.num_segmentations, config.num_patches
    labels = np.empty((K, n), dtype=np.int16)
    centres = np.empty((K, P), dtype=np.int64)
    for k, ss in enumerate(np.random.SeedSequence(config.seed).spawn(K)):
        rng = np.random.default_rng(ss)
        init = rng.choice(n, size=config.num_random_seeds, replace=False)
        c = farthest_point_sampling(dist, P, initial=init)
        centres[k] = c
        labels[k] = voronoi_labels(dist, c)
    return {"labels": labels, "centres": centres}


def random_segmentation_set(mesh: Mesh, config: SegmentationConfig = SegmentationConfig(), *, progress: bool = True) -> Segmentations:
    """Labels and centres of ``config.num_segmentations`` random segmentations of ``mesh``.

    Cached on disk under ``<cache>/segmentations/<key>.npz`` (key: content hash of the vertices, faces,
    config and a version). Deterministic for a given config. Cold on the 13k template (K=100, P=500,
    2 cores): the all-pairs table (~1 min, itself cached) plus a few seconds.
    """
    mesh.require_faces()
    key = content_hash("segmentations", _SEGMENTATION_VERSION, mesh.vertices, mesh.faces, sorted(asdict(config).items()))
    arrays = cached_arrays("segmentations", key, lambda: _build(mesh, config, progress))
    return Segmentations(labels=arrays["labels"], centres=arrays["centres"], config=config)


def random_segmentations(mesh: Mesh, config: SegmentationConfig = SegmentationConfig(), *, progress: bool = True) -> np.ndarray:
    """(K, V) int16 patch labels of K random geodesic-Voronoi segmentations (see :func:`random_segmentation_set`)."""
    return random_segmentation_set(mesh, config, progress=progress).labels
