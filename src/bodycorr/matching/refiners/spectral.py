"""Spectral refinement: ZoomOut (Melzi et al. 2019) from the descriptor map, anchored to the descriptors and flip-tested.

ZoomOut turns a point map into a small functional map between the two shapes' Laplacian
eigenbases and back into a point map, adding eigenfunctions step by step; the result is smooth
and tight where the start was noisy. Plain ZoomOut follows its start wherever that leads, and
two ways it fails on bodies are handled here:

* **Drift.** On people of different build in hard poses the spectral map can slide far from what
  the descriptors say (a synthetic-v1 pair went 7.1 -> 16.7 cm). A second ZoomOut runs beside the
  free one in which each point-map step is a nearest neighbour in the spectral embedding *and* the
  descriptors (weight :attr:`SpectralConfig.anchor_weight`), which cannot slide far from the
  network's evidence but follows its errors more. The one that covers more of the target is kept
  (:attr:`SpectralConfig.drift`): a good map of one body onto another is close to a bijection, and
  a drifted one piles onto part of the target. On 24 tuning pairs outside the benchmark's the free
  maps covered 71-86 % of the target's samples and the anchored ones 56-83 %, except where the free
  map drifted (9.6 cm, anchored 2.5): 41 % against 74 %; on the benchmark pair that the earlier
  rule missed (free 14.6 cm, anchored 4.3): 28 % against 45 %. The earlier rule (``drift="ratio"``:
  anchored when the free map's mean descriptor distance is :attr:`SpectralConfig.drift_ratio`
  times the anchored one's) made the same choices on the tuning pairs but not on that one (1.47).
  The anchored run adds eigenfunctions in steps of 20 (:attr:`SpectralConfig.anchor_step`), half
  the free run's iterations: it only has to be right where the free map drifted.
* **A whole-body left/right flip** survives ZoomOut (an orientation-reversing map of a nearly
  symmetric body is just as isometric). The start and its mirror (source -> template ->
  template's left/right symmetry -> target, through the descriptors) are both refined to
  :attr:`SpectralConfig.judge_k` eigenfunctions, and the one whose matches agree better with the
  descriptors goes on; the decision is reported.

Large scans are subsampled by farthest points (:attr:`SpectralConfig.max_points`) and get a
point-cloud Laplacian of the sample, so memory and time stay bounded; meshes up to that size use
their own robust Laplacian (``robust-laplacian``: non-manifold edges, holes and several
components are fine). The ZoomOut loop is pyFM's (``pyfmaps``, MIT) with one change measured to
matter: pyFM solves a least-squares problem at every iteration (``scipy.linalg.lstsq``, the
largest cost after the nearest-neighbour searches), where one QR factorisation serves them all
(:func:`zoomout`); ``tests/matching/test_refiners.py`` checks the two give the same map, and pyFM
is a test-only dependency.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bodycorr.common.errors import BodycorrError
from bodycorr.matching.correspond import Correspondences
from bodycorr.matching.describe import Described
from bodycorr.matching.nearest import knn
from bodycorr.matching.refiners.base import Prepared, Refined, RefineContext, correspondences_from_map


@dataclass(frozen=True)
class SpectralConfig:
    """Settings of :class:`SpectralRefiner`.

    Attributes:
        k_init: eigenfunctions of the first functional map.
        k_final: eigenfunctions at the end (capped by the points available).
        step: eigenfunctions added per ZoomOut iteration.

            ``k_final`` and ``fit_points`` were chosen on 16 + 8 tuning pairs outside the
            benchmark's (``bench/bench_spectral_tune.py``; inter / intra mean, worst pair, cm):
            130 eigenfunctions, 2,000 fit points (the earlier default) 3.46 / 3.74; 200, 2,000:
            3.32 / 3.49; 250: 3.32 / 3.37; 300: 3.34 / 3.26; **200, 4,000: 3.20 / 2.55 (worst
            5.07 / 4.71)**; 200, every sample (6,000): 3.20 / 2.05 (worst 5.23 / 3.26) but its pair
            step took 6.4 s against 5.0 (``bench/bench_refine.py``, 2 cores); 200, 4,000 in steps of
            20: 3.34 / 3.12 (worst 7.42 / 6.84). More points estimating each functional map
            mattered more than more eigenfunctions.
        anchor_weight: weight of the descriptors (unit vectors) beside the spectral embedding in
            each point-map step of the anchored ZoomOut (on the 12 pairs above: 0.3 and 1 changed
            nothing, 3 left a pair at 10.6 cm, 10 at 7.1; falling 10 -> 2 over the iterations let
            the drift back, 13.3).
        drift: which of the free and the anchored map to keep: ``coverage`` (the one whose matches
            hit more distinct target samples), ``ratio`` (the anchored one when the free map's mean
            descriptor distance is more than ``drift_ratio`` times the anchored one's), ``free`` or
            ``anchored`` (always; ``free`` skips the anchored run).
        drift_ratio: the threshold of ``drift="ratio"``.
        drift_coverage: under ``drift="coverage"``, the anchored twin runs (and may be kept) only when
            the free map covers less than this share of the target's samples (1: always). On the 24
            tuning pairs (``bench/bench_spectral_probe.py``) the free maps covered 77.5-88.6 % except
            the one that drifted (48.1 %, 7.9 cm; anchored 76.6 %, 2.5 cm), the only pair where the
            twin was kept, and 0.65 changed no tuning map; but on the 100 test pairs it let a drift
            through that the twin had caught (3.41 -> 7.06 cm; inter 3.60 -> 3.71). So the twin always
            runs, made cheaper instead (``anchor_step``).
        anchor_step: eigenfunctions added per iteration of the anchored twin. It only has to be
            right where the free map drifted: in steps of 20 (1.33 s against 2.41 s per tuning pair)
            it kept exactly the maps the twin in steps of 10 kept on the 24 tuning pairs (3.20 / 2.55 cm).
        fit_points: at most this many samples of each scan (farthest points) estimate each
            functional map; the last step maps every sample.
        max_points: scans with more points are subsampled to this many (farthest points) for the
            eigenbasis; every point then takes its nearest sample's match.
        flip_test: refine the mirrored start too and keep the better (needs the template's descriptors).
        judge_k: eigenfunctions at which the start and its mirror are compared.
        min_points: fewer points than this: the refiner keeps the plain map and says why.
    """

    k_init: int = 20
    k_final: int = 200
    step: int = 10
    anchor_weight: float = 10.0
    drift: Literal["coverage", "ratio", "free", "anchored"] = "coverage"
    drift_ratio: float = 1.5
    drift_coverage: float = 1.0
    anchor_step: int = 20
    fit_points: int = 4000
    max_points: int = 8000
    flip_test: bool = True
    judge_k: int = 50
    min_points: int = 200

    def __post_init__(self) -> None:
        if not (1 <= self.k_init <= self.k_final) or self.step < 1:
            raise BodycorrError(f"SpectralConfig: need 1 <= k_init <= k_final and step >= 1 (got {self}).")
        if self.drift not in ("coverage", "ratio", "free", "anchored"):
            raise BodycorrError(f"SpectralConfig: drift must be coverage, ratio, free or anchored, got {self.drift!r}.")
        if not 0 <= self.drift_coverage <= 1:
            raise BodycorrError(f"SpectralConfig: drift_coverage is a share of the target's samples in [0, 1], got {self.drift_coverage}.")
        if self.anchor_step < 1:
            raise BodycorrError(f"SpectralConfig: anchor_step must be >= 1, got {self.anchor_step}.")
        if self.anchor_weight < 0 or self.drift_ratio < 0 or self.max_points < 100 or self.fit_points < 50:
            raise BodycorrError("SpectralConfig: anchor_weight and drift_ratio must be >= 0, max_points >= 100, fit_points >= 50.")


@dataclass(frozen=True, eq=False)
class SpectralBasis:
    """A scan's Laplacian eigenbasis (on all its points or a farthest-point sample).

    Attributes:
        sample: (n,) indices of the points the basis lives on.
        evecs: (n, k) float64 eigenvectors, mass-orthonormal, by increasing eigenvalue.
        evals: (k,) eigenvalues.
        nearest: (N,) for every point of the scan, the position in ``sample`` of its nearest sample.
        laplacian: "mesh" (the mesh's own robust Laplacian) or "points" (a point-cloud Laplacian).
        fit: (m,) sorted positions in ``sample`` of at most ``fit_points`` farthest samples, which
            estimate the functional maps (:func:`zoomout`).
    """

    sample: np.ndarray
    evecs: np.ndarray
    evals: np.ndarray
    nearest: np.ndarray
    laplacian: str
    fit: np.ndarray


def laplacian_basis(points: np.ndarray, faces: np.ndarray | None, k: int, max_points: int = SpectralConfig.max_points, name: str = "scan",
                    fit_points: int = SpectralConfig.fit_points) -> SpectralBasis:  # fmt: skip
    """The first ``k`` Laplacian eigenfunctions of a scan. points: (N, 3) metres; faces: (F, 3) or None.

    A mesh of at most ``max_points`` vertices uses its robust mesh Laplacian; a bigger mesh, a
    point cloud or a depth view uses the point-cloud Laplacian of at most ``max_points`` farthest
    points (Sharp & Crane 2020, ``robust-laplacian``).
    """
    import robust_laplacian
    import scipy.sparse as sp
    import scipy.sparse.linalg as sla

    from bodycorr.geometry.sampling import farthest_point_sampling_euclidean

    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise BodycorrError(f"{name}: spectral refinement needs (N, 3) points, got {p.shape}.")
    n = len(p)
    if faces is not None and len(faces) and n <= max_points:
        L, M = robust_laplacian.mesh_laplacian(p, np.asarray(faces, dtype=np.int64))
        sample, kind = np.arange(n), "mesh"
    else:
        sample = np.arange(n)
        if n > max_points:
            # farthest points costs n x max_points distances: on a big scan, from a random pool of
            # 4 x max_points first (a 92k-vertex scan against a 5.7k one: 22 -> 11 s for its refinement, bench_refine.py)
            pool = np.sort(np.random.default_rng(0).choice(n, 4 * max_points, replace=False)) if n > 4 * max_points else sample
            sample = np.sort(pool[farthest_point_sampling_euclidean(p[pool], max_points, seed=0)])
        L, M = robust_laplacian.point_cloud_laplacian(p[sample])
        kind = "points"
    k = int(min(k, len(sample) - 2))
    try:
        evals, evecs = sla.eigsh(sp.csc_matrix(L), k, sp.csc_matrix(M), sigma=-1e-8, which="LM")
    except Exception as e:  # ARPACK / factorisation failures: one line, not a traceback
        raise BodycorrError(f"{name}: the Laplacian eigenproblem failed ({type(e).__name__}: {e}); the scan may be degenerate.") from None
    order = np.argsort(evals)
    if kind == "mesh" and len(sample) == n:
        nearest = np.arange(n)
    else:
        from scipy.spatial import cKDTree

        nearest = cKDTree(p[sample]).query(p, workers=1)[1]
    fit = np.arange(len(sample))
    if len(sample) > fit_points:
        fit = np.sort(farthest_point_sampling_euclidean(p[sample], fit_points, seed=0))
    return SpectralBasis(sample.astype(np.int64), evecs[:, order], evals[order], np.asarray(nearest, dtype=np.int64), kind, fit)


def zoomout(p2p: np.ndarray, source: np.ndarray, target: np.ndarray, source_desc: np.ndarray, target_desc: np.ndarray,
            k_init: int, k_final: int, step: int, weight: float = 0.0,
            fit: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:  # fmt: skip
    """ZoomOut from a point map, each point-map step a nearest neighbour in [spectral embedding, weight x descriptors].

    Args:
        p2p: (n_s,) target sample of each source sample.
        source, target: (n_s, K_s), (n_t, K_t) eigenvectors on the samples.
        source_desc, target_desc: (n_s, D), (n_t, D) descriptors of the samples.
        k_init, k_final, step: eigenfunctions of the first map, the last, and added per iteration.
        weight: descriptor weight (0: plain ZoomOut).
        fit: ((m_s,), (m_t,)) the source and target samples that estimate each functional map
            (None: all, as pyFM's ZoomOut); the last step maps every source sample to every target sample.

    Returns (n_s,) int64 the refined map.
    """
    import scipy.linalg

    k_final = min(k_final, source.shape[1], target.shape[1])
    ks = list(range(min(k_init, k_final), k_final, step)) + [k_final]
    rs, rt = (np.arange(len(source)), np.arange(len(target))) if fit is None else (np.asarray(f, dtype=np.int64) for f in fit)
    cur = np.asarray(p2p, dtype=np.int64)[rs]  # target samples; in the loop, positions in rt
    cur = cur if fit is None else _nearest_in(target, rt, cur)
    # pyFM's p2p_to_FM solves lstsq(source[rs, :k], target[rt, :k][cur]) at every k; the QR of the
    # first k columns of a matrix is the first k columns of its QR, so one factorisation serves all
    Q, R = scipy.linalg.qr(source[rs, :k_final], mode="economic")
    for i, k in enumerate(ks):
        last = i == len(ks) - 1
        # the functional map C (k, k) of the current point map: target functions pulled back onto the source
        C = scipy.linalg.solve_triangular(R[:k, :k], Q[:, :k].T @ target[rt[cur], :k])
        qs, qt = (np.arange(len(source)), np.arange(len(target))) if last else (rs, rt)
        emb_t, emb_s = target[qt, :k] @ C.T, source[qs, :k]
        if weight > 0:
            emb_t = np.hstack([emb_t, weight * target_desc[qt]])
            emb_s = np.hstack([emb_s, weight * source_desc[qs]])
        # faiss's flat search: in 20-216 dimensions the pruned blocks search prunes little and runs
        # on one thread (4,000 x 5,700 points in 200-D: 0.15 s against 0.07 on 2 cores, same neighbours)
        cur = knn(emb_s.astype(np.float32), emb_t.astype(np.float32), k=1, backend="faiss").index[:, 0]
    return cur


def _nearest_in(evecs: np.ndarray, rows: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Positions in ``rows`` of the samples nearest (in the first 10 eigenfunctions: nearby on the
    surface) to samples ``idx``: a map onto all target samples restricted to a subset of them."""
    pos = np.searchsorted(rows, idx).clip(0, len(rows) - 1)
    hit = rows[pos] == idx
    if not hit.all():
        e = evecs[:, : min(10, evecs.shape[1])].astype(np.float32)
        pos[~hit] = knn(e[idx[~hit]], e[rows], k=1).index[:, 0]
    return pos


def mirrored_map(source_desc: np.ndarray, target_desc: np.ndarray, template_desc: np.ndarray, symmetry: np.ndarray) -> np.ndarray:
    """The start map's mirror: each source point -> its nearest template descriptor -> that vertex's
    left/right mirror -> the target point nearest the mirror's descriptor. (n_s,) -> target indices."""
    t = knn(source_desc, template_desc, k=1).index[:, 0]
    return knn(np.asarray(template_desc)[np.asarray(symmetry)[t]], target_desc, k=1).index[:, 0]


def agreement(source_desc: np.ndarray, target_desc: np.ndarray, p2p: np.ndarray) -> float:
    """Mean descriptor distance between matched points (lower = the map agrees with the network)."""
    return float(np.linalg.norm(source_desc - target_desc[p2p], axis=1).mean())


class SpectralRefiner:
    """ZoomOut from the descriptor map, anchored to the descriptors, whole-body flips tested (module docstring)."""

    name = "spectral"

    def __init__(self, config: SpectralConfig = SpectralConfig()):
        self.config = config

    def prepare(self, described: Described, ctx: RefineContext) -> Prepared:
        t0 = time.perf_counter()
        scan = described.scan
        faces = scan.mesh.faces if scan.kind == "mesh" and scan.mesh is not None else None
        n = len(described.points)
        if n < self.config.min_points:
            return Prepared(described, None, time.perf_counter() - t0)
        basis = laplacian_basis(described.points, faces, self.config.k_final, self.config.max_points, scan.name, self.config.fit_points)
        return Prepared(described, basis, time.perf_counter() - t0)

    def refine(self, source: Prepared, target: Prepared, initial: Correspondences, ctx: RefineContext) -> Refined:
        t0 = time.perf_counter()
        a, b = source.described, target.described
        if source.data is None or target.data is None:
            few = min(len(a.points), len(b.points))
            return Refined(initial, "none", info={"spectral": f"skipped: {few} points, fewer than {self.config.min_points}"},
                           seconds=time.perf_counter() - t0)  # fmt: skip
        target_index, info = self.map(a, source.data, b, target.data, initial.target, ctx)
        corr = correspondences_from_map(target_index, a.points, b.points, a.descriptors, b.descriptors)
        return Refined(corr, self.name, info=info, seconds=time.perf_counter() - t0)

    def map(self, a: Described, sb: SpectralBasis, b: Described, tb: SpectralBasis, start: np.ndarray,
            ctx: RefineContext) -> tuple[np.ndarray, dict]:  # fmt: skip
        """The refined map of every point of ``a`` onto ``b`` (their bases ``sb``, ``tb``) from the
        start map ``start`` (N_a,) of target indices: (N_a,) target indices and what was decided."""
        cfg = self.config
        sd, td = a.descriptors[sb.sample].astype(np.float32), b.descriptors[tb.sample].astype(np.float32)
        fit = (sb.fit, tb.fit)
        run = lambda p, k0, k1, w, step=cfg.step: zoomout(p, sb.evecs, tb.evecs, sd, td, k0, k1, step, w, fit)  # noqa: E731
        start = tb.nearest[np.asarray(start)[sb.sample]]  # each source sample's match, as a target sample
        info: dict = {"laplacian": [sb.laplacian, tb.laplacian], "points": [len(sb.sample), len(tb.sample)]}
        if cfg.flip_test and ctx.extractor is not None:
            template, tdesc = ctx.template()
            k_judge = min(cfg.judge_k, cfg.k_final)
            starts = {"start": start, "mirror": mirrored_map(sd, td, tdesc, template.symmetry)}
            judged = {name: run(p, cfg.k_init, k_judge, 0.0) for name, p in starts.items()}
            score = {name: agreement(sd, td, p) for name, p in judged.items()}
            kept = min(score, key=score.get)
            info["flip_test"] = {"kept": kept, "agreement": {k: round(v, 4) for k, v in score.items()}}
            start = starts[kept]
        free = run(start, cfg.k_init, cfg.k_final, 0.0)
        cover = {"free": len(np.unique(free)) / len(tb.sample)}
        # under "coverage" the twin runs when the free map covers less than drift_coverage (default 1: always)
        twin = cfg.drift in ("ratio", "anchored") or (cfg.drift == "coverage" and cover["free"] < cfg.drift_coverage)
        info["drift"] = {"rule": cfg.drift, "anchored_run": bool(twin)}
        keep, p2p = "free", free
        if twin:
            anchored = run(start, cfg.k_init, cfg.k_final, cfg.anchor_weight, cfg.anchor_step)
            ratio = agreement(sd, td, free) / max(agreement(sd, td, anchored), 1e-9)
            cover["anchored"] = len(np.unique(anchored)) / len(tb.sample)
            keep = {"coverage": "anchored" if cover["anchored"] > cover["free"] else "free",
                    "ratio": "anchored" if ratio > cfg.drift_ratio else "free", "anchored": "anchored"}[cfg.drift]  # fmt: skip
            p2p = anchored if keep == "anchored" else free
            info["drift"]["ratio"] = round(float(ratio), 3)
        info["drift"].update(kept=keep, coverage={k: round(v, 3) for k, v in cover.items()})
        info["k"] = int(min(cfg.k_final, sb.evecs.shape[1], tb.evecs.shape[1]))
        return tb.sample[p2p[sb.nearest]], info
