"""BodyMap image->template metrics on per-pixel vertex maps: 2D window accuracy, GPS AP/AR, temporal consistency."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.spatial import cKDTree

from bodycorr.common.errors import BodycorrError

# A geodesic distance function: (a: (N,) int vertex ids, b: (N,) int vertex ids) -> (N,) metres.
Geodesic = Callable[[np.ndarray, np.ndarray], np.ndarray]

GPS_KAPPA = 0.255  # DensePose's normalising parameter (metres)
GPS_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 10)  # 0.50, 0.55, ..., 0.95
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's 101 recall thresholds
_CHUNK_PAIRS = 1 << 21  # pixel pairs per block when resolving ties between pixels of one vertex


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------


def _check_points(template_points: np.ndarray) -> np.ndarray:
    pts = np.asarray(template_points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise BodycorrError(f"template_points: expected a (Vt, 3) array, got shape {pts.shape}. "
                            "Pass get_template().mesh.vertices.")  # fmt: skip
    if not np.isfinite(pts).all():
        raise BodycorrError("template_points: contains NaN or inf. Pass finite rest-pose positions.")
    return pts


def _check_map(a: np.ndarray, name: str, num_vertices: int | None, ndim: int = 2) -> np.ndarray:
    m = np.asarray(a)
    if m.ndim != ndim:
        shape = "(H, W)" if ndim == 2 else "(T, H, W)"
        raise BodycorrError(f"{name}: expected a {shape} integer map, got shape {m.shape}. Pass one map per image.")
    if not np.issubdtype(m.dtype, np.integer):
        raise BodycorrError(f"{name}: expected integer vertex ids (-1 = none), got dtype {m.dtype}. "
                            "Convert with .astype(np.int64) after rounding.")  # fmt: skip
    if m.size and m.min() < -1:
        raise BodycorrError(f"{name}: ids below -1 found (min {m.min()}). Use -1 for background only.")
    if num_vertices is not None and m.size and m.max() >= num_vertices:
        raise BodycorrError(f"{name}: vertex id {m.max()} out of range for a template of {num_vertices} vertices. "
                            "Use the template the maps were made with.")  # fmt: skip
    return m.astype(np.int64, copy=False)


def _same_shape(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape != b.shape:
        raise BodycorrError(f"{na} {a.shape} and {nb} {b.shape}: shapes differ. Pass maps of the same image size.")


# ----------------------------------------------------------------------------------------------
# pixels grouped by the vertex they show
# ----------------------------------------------------------------------------------------------


class _VertexPixels:
    """The foreground pixels of one vertex map grouped by vertex, with a k-d tree over the shown vertices.

    A vertex may cover several pixels (a coarse template or a high-resolution image): it is one
    *group*, and distances to it are to the nearest of its pixels.
    """

    def __init__(self, vertex_map: np.ndarray, points: np.ndarray):
        rows, cols = np.nonzero(vertex_map >= 0)
        verts = vertex_map[rows, cols]
        order = np.argsort(verts, kind="stable")
        self.pixels = np.stack([rows, cols], 1).astype(np.float64)[order]  # (N, 2) sorted by vertex
        sv = verts[order]
        self.vertices, self.start, self.count = np.unique(sv, return_index=True, return_counts=True)
        self.tree = cKDTree(points[self.vertices]) if len(self.vertices) else None

    def __len__(self) -> int:
        return len(self.vertices)

    def query(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dist (N,), group (N,)) of the shown vertex nearest to each template point ``x`` (N, 3)."""
        d, g = self.tree.query(x)
        return d, g.astype(np.int64)

    def min_distance(self, groups: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """(N,) pixel distance from ``xy[i]`` (N, 2) to the nearest pixel of group ``groups[i]``."""
        n = len(groups)
        out = np.empty(n)
        counts = self.count[groups]
        csum = np.concatenate([[0], np.cumsum(counts)])
        i = 0
        while i < n:  # blocks of about _CHUNK_PAIRS pixel pairs
            j = max(i + 1, int(np.searchsorted(csum, csum[i] + _CHUNK_PAIRS, side="right")) - 1)
            j = min(j, n)
            c = counts[i:j]
            rep = np.repeat(np.arange(j - i), c)
            seg = np.concatenate([[0], np.cumsum(c)[:-1]])
            within = np.arange(len(rep)) - seg[rep]
            pix = self.pixels[self.start[groups[i:j]][rep] + within]
            d = np.linalg.norm(pix - xy[i:j][rep], axis=1)
            out[i:j] = np.minimum.reduceat(d, seg)
            i = j
        return out

    def group_distance(self, groups: np.ndarray, other: "_VertexPixels", other_groups: np.ndarray) -> np.ndarray:
        """(N,) smallest pixel distance between group ``groups[i]`` here and ``other_groups[i]`` in ``other``."""
        counts = self.count[groups]
        rep = np.repeat(np.arange(len(groups)), counts)
        seg = np.concatenate([[0], np.cumsum(counts)[:-1]])
        within = np.arange(len(rep)) - seg[rep]
        pix = self.pixels[self.start[groups][rep] + within]
        d = other.min_distance(other_groups[rep], pix)
        return np.minimum.reduceat(d, seg) if len(d) else np.empty(0)


# ----------------------------------------------------------------------------------------------
# 2D window accuracy
# ----------------------------------------------------------------------------------------------


def pixel_window_errors(pred_vertex: np.ndarray, true_vertex: np.ndarray, template_points: np.ndarray) -> np.ndarray:
    """(N,) 2D error in pixels of every true-foreground pixel (row-major order), ``inf`` where predicted background.

    For a true-foreground pixel p with predicted vertex v, q is the true-foreground pixel whose
    TRUE template point is nearest to ``template_points[v]`` (k-d tree over the image's true
    points); the error is |p - q| in pixels. When that nearest vertex covers several pixels, q is
    the one of them nearest to p (so a perfect prediction has error 0 at any resolution).

    Args:
        pred_vertex: (H, W) int predicted template vertex per pixel, -1 = predicted background.
        true_vertex: (H, W) int true template vertex per pixel, -1 = no person.
        template_points: (Vt, 3) rest-pose template vertex positions.
    """
    pts = _check_points(template_points)
    pred = _check_map(pred_vertex, "pred_vertex", len(pts))
    true = _check_map(true_vertex, "true_vertex", len(pts))
    _same_shape(pred, true, "pred_vertex", "true_vertex")
    rows, cols = np.nonzero(true >= 0)
    err = np.full(len(rows), np.inf)
    if len(rows) == 0:
        return err
    pv = pred[rows, cols]
    ok = pv >= 0
    if ok.any():
        index = _VertexPixels(true, pts)
        _, g = index.query(pts[pv[ok]])
        err[ok] = index.min_distance(g, np.stack([rows[ok], cols[ok]], 1).astype(np.float64))
    return err


def window_accuracy(pred_vertex: np.ndarray, true_vertex: np.ndarray, template_points: np.ndarray,
                    windows: Sequence[float] = (5, 10, 20)) -> dict[int, float]:  # fmt: skip
    """Share of true-foreground pixels "coloured correctly within an error window" (BodyMap, Table 2).

    A pixel p is correct at window w if the pixel q that truly shows p's predicted template point
    lies within w pixels of p (see :func:`pixel_window_errors`). Pixels predicted as background
    count as wrong; pixels predicted as foreground on true background are not counted (the
    denominator is the true foreground). The value depends on the image resolution: a window of 5
    px is stricter at 1024² than at 128², so callers must state the resolution with the numbers.

    Args:
        pred_vertex: (H, W) int, -1 = predicted background.
        true_vertex: (H, W) int, -1 = no person.
        template_points: (Vt, 3) rest-pose template points.
        windows: windows in pixels (≥ 0).

    Returns:
        {window: share in [0, 1]}; every share is NaN when the image has no true foreground.
    """
    ws = _check_windows(windows)
    err = pixel_window_errors(pred_vertex, true_vertex, template_points)
    return {w: float((err <= w).mean()) if len(err) else float("nan") for w in ws}


def _check_windows(windows: Sequence[float]) -> tuple:
    ws = tuple(windows)
    if not ws or any(not np.isfinite(w) or w < 0 for w in ws):
        raise BodycorrError(f"windows {ws}: need one or more finite pixel windows ≥ 0, e.g. (5, 10, 20).")
    return ws


# ----------------------------------------------------------------------------------------------
# GPS and AP/AR
# ----------------------------------------------------------------------------------------------


def table_geodesic(table: np.ndarray) -> Geodesic:
    """A :data:`Geodesic` reading a (Vt, Vt) distance table (metres), e.g. ``all_pairs_geodesics``."""
    if table.ndim != 2 or table.shape[0] != table.shape[1]:
        raise BodycorrError(f"geodesic table: expected a square (Vt, Vt) array, got {table.shape}.")
    n = table.shape[0]

    def geodesic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        if a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n):
            raise BodycorrError(f"geodesic: vertex ids outside 0..{n - 1}. Use the template the table was built on.")
        return table[a, b].astype(np.float64)

    return geodesic


@functools.lru_cache(maxsize=1)
def template_geodesic_fn() -> Geodesic:
    """Geodesics (metres) between template vertices, from the cached all-pairs table (≈ 0.5 s to load, 340 MiB)."""
    from bodycorr.body.template import get_template
    from bodycorr.geometry.geodesic import all_pairs_geodesics

    return table_geodesic(all_pairs_geodesics(get_template().mesh))


def gps_scores(pred_vertex: np.ndarray, true_vertex: np.ndarray, instance: np.ndarray | None, geodesic: Geodesic,
               kappa: float = GPS_KAPPA) -> np.ndarray:  # fmt: skip
    """(P,) geodesic point similarity of every person instance (DensePose protocol).

    ``GPS_j = mean over the annotated pixels p of person j of exp(-g(pred_p, true_p)² / (2 κ²))``,
    g the geodesic in metres; a pixel predicted as background (or whose geodesic is inf) scores 0.
    The annotated pixels of person j are those with ``instance == j`` and a true vertex.

    Args:
        pred_vertex: (H, W) int, -1 = predicted background.
        true_vertex: (H, W) int, -1 = no person.
        instance: (H, W) int person id per pixel (-1 background, persons 0..P-1, every id present),
            or None for one person made of the whole true foreground.
        geodesic: (a (N,), b (N,)) -> (N,) metres, e.g. :func:`template_geodesic_fn`.
        kappa: normalising parameter, metres (DensePose: 0.255).

    Returns:
        (P,) float in [0, 1]; an empty array when the image has no person.
    """
    pred = _check_map(pred_vertex, "pred_vertex", None)
    true = _check_map(true_vertex, "true_vertex", None)
    _same_shape(pred, true, "pred_vertex", "true_vertex")
    if not kappa > 0:
        raise BodycorrError(f"gps_scores: kappa must be > 0 metres, got {kappa}. DensePose uses 0.255.")
    if instance is None:
        inst = np.where(true >= 0, 0, -1)
    else:
        inst = _check_map(instance, "instance", None)
        _same_shape(inst, true, "instance", "true_vertex")
        orphan = int(((true >= 0) & (inst < 0)).sum())
        if orphan:
            raise BodycorrError(f"instance: {orphan} true-foreground pixels have instance -1. "
                                "Label every true-foreground pixel with its person id.")  # fmt: skip
    ann = (inst >= 0) & (true >= 0)
    persons = int(inst.max()) + 1 if inst.size else 0
    counts = np.bincount(inst[ann], minlength=persons)
    if persons and (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        raise BodycorrError(f"instance: persons {missing[:5]} have no annotated pixel. "
                            "Number the persons 0..P-1 without gaps and drop persons without truth.")  # fmt: skip
    pv, tv, who = pred[ann], true[ann], inst[ann]
    score = np.zeros(len(pv))
    ok = pv >= 0
    if ok.any():
        g = np.asarray(geodesic(pv[ok], tv[ok]), dtype=np.float64)
        if g.shape != (int(ok.sum()),) or np.isnan(g).any() or (g < 0).any():
            raise BodycorrError(f"geodesic: returned shape {g.shape} with NaN or negative values for "
                                f"{int(ok.sum())} pairs. It must map (N,), (N,) ids to (N,) metres ≥ 0.")  # fmt: skip
        score[ok] = np.exp(-(g**2) / (2 * kappa**2))
    return np.bincount(who, weights=score, minlength=persons) / np.maximum(counts, 1)


@dataclass(frozen=True, eq=False)
class APAR:
    """COCO-style average precision / recall over GPS thresholds.

    Attributes:
        ap, ar: means over the thresholds, in [0, 1].
        ap50, ap75, ar50, ar75: at GPS thresholds 0.5 and 0.75 (NaN if not among ``thresholds``).
        thresholds: (T,) GPS thresholds.
        ap_per_threshold, ar_per_threshold: (T,) AP (101-point interpolated) and recall at each.
        num_persons: ground-truth persons; num_detections: persons with a detection.
    """

    ap: float
    ar: float
    ap50: float
    ap75: float
    ar50: float
    ar75: float
    thresholds: np.ndarray
    ap_per_threshold: np.ndarray
    ar_per_threshold: np.ndarray
    num_persons: int
    num_detections: int


def _flat(arrays, name: str) -> list[np.ndarray]:
    if isinstance(arrays, np.ndarray):
        arrays = [arrays]
    out = [np.asarray(a, dtype=np.float64).reshape(-1) if np.ndim(a) <= 1 else None for a in arrays]
    if any(a is None for a in out):
        raise BodycorrError(f"{name}: expected one (P,) array per image. Pass a list of 1-D arrays.")
    return out


def gps_ap_ar(gps, det_scores, thresholds: Sequence[float] = GPS_THRESHOLDS, detected=None) -> APAR:
    """AP and AR over GPS thresholds, as in DensePose's COCO evaluation.

    Each ground-truth person has at most one detection (the prediction made for that person), so
    there is no matching step: at threshold t a detection is a true positive when its GPS ≥ t,
    otherwise a false positive (and its person stays a false negative). Detections of all images
    are ranked by confidence (stable sort: ties keep the input order, as COCO's mergesort), giving
    the precision/recall curve; precision is made non-increasing and read at COCO's 101 recall
    points (0, 0.01, .., 1; 0 beyond the last recall reached); AP is their mean. AR at t is the
    final recall. AP and AR are the means over the thresholds.

    Args:
        gps: list (one per image) of (P_i,) GPS scores; NaN = the person was not detected.
        det_scores: list of (P_i,) detection confidences (higher = surer); NaN = not detected.
        thresholds: GPS thresholds (default 0.50:0.05:0.95).
        detected: optional list of (P_i,) bool, False = not detected.

    Raises:
        BodycorrError: mismatched shapes, GPS outside [0, 1], or no person at all.
    """
    g_list, s_list = _flat(gps, "gps"), _flat(det_scores, "det_scores")
    if len(g_list) != len(s_list) or any(a.shape != b.shape for a, b in zip(g_list, s_list)):
        raise BodycorrError("gps and det_scores: need one array of the same length per image. "
                            "Give a confidence for every person (NaN where not detected).")  # fmt: skip
    g = np.concatenate(g_list) if g_list else np.empty(0)
    s = np.concatenate(s_list) if s_list else np.empty(0)
    det = ~(np.isnan(g) | np.isnan(s))
    if detected is not None:
        flags = [detected] if isinstance(detected, np.ndarray) else detected
        d_list = [np.asarray(d, dtype=bool).reshape(-1) for d in flags]
        if len(d_list) != len(g_list) or any(a.shape != b.shape for a, b in zip(d_list, g_list)):
            raise BodycorrError("detected: need one bool array per image, shaped like gps.")
        det &= np.concatenate(d_list) if d_list else np.empty(0, bool)
    if len(g) == 0:
        raise BodycorrError("gps_ap_ar: no persons to score. Evaluate images with at least one person.")
    if ((g[det] < 0) | (g[det] > 1)).any() or np.isinf(s[det]).any():
        raise BodycorrError("gps_ap_ar: GPS scores must lie in [0, 1] and confidences be finite. "
                            "Pass gps_scores() output.")  # fmt: skip
    thr = np.round(np.asarray(thresholds, dtype=np.float64).reshape(-1), 10)
    if len(thr) == 0 or ((thr < 0) | (thr > 1)).any():
        raise BodycorrError(f"thresholds {thr.tolist()}: need one or more GPS thresholds in [0, 1].")
    npos = len(g)
    order = np.argsort(-s[det], kind="mergesort")
    gd = g[det][order]
    nd = len(gd)
    aps, ars = np.zeros(len(thr)), np.zeros(len(thr))
    for i, t in enumerate(thr):
        if nd == 0:
            continue
        tp = np.cumsum(gd >= t)
        rc = tp / npos
        pr = tp / np.arange(1, nd + 1)
        pr = np.maximum.accumulate(pr[::-1])[::-1]
        k = np.searchsorted(rc, RECALL_POINTS, side="left")
        aps[i] = np.where(k < nd, pr[np.minimum(k, nd - 1)], 0.0).mean()
        ars[i] = rc[-1]

    def at(v: np.ndarray, t: float) -> float:
        hit = np.flatnonzero(np.isclose(thr, t))
        return float(v[hit[0]]) if len(hit) else float("nan")

    return APAR(ap=float(aps.mean()), ar=float(ars.mean()), ap50=at(aps, 0.5), ap75=at(aps, 0.75),
                ar50=at(ars, 0.5), ar75=at(ars, 0.75), thresholds=thr, ap_per_threshold=aps,
                ar_per_threshold=ars, num_persons=npos, num_detections=nd)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# temporal consistency
# ----------------------------------------------------------------------------------------------


def _consistency_counts(pred: np.ndarray, true: np.ndarray, pts: np.ndarray, k: int, window: float,
                        visible_tol: float, max_pairs: int, max_pixels: int, rng: np.random.Generator,
                        index: Callable[[str, int], _VertexPixels]) -> tuple[int, int]:  # fmt: skip
    """(positives, evaluated pixels) over the sampled frame pairs (t, t + k)."""
    starts = np.arange(len(true) - k)
    if len(starts) > max_pairs:
        starts = np.sort(rng.choice(starts, size=max_pairs, replace=False))
    pos = total = 0
    for t in starts:
        rows, cols = np.nonzero(true[t] >= 0)
        if len(rows) > max_pixels:
            pick = np.sort(rng.choice(len(rows), size=max_pixels, replace=False))
            rows, cols = rows[pick], cols[pick]
        true_next = index("true", t + k)
        if len(rows) == 0 or len(true_next) == 0:
            continue
        dist, gt = true_next.query(pts[true[t][rows, cols]])
        vis = dist <= visible_tol
        total += int(vis.sum())
        pv = pred[t][rows, cols][vis]
        gt = gt[vis]
        ok = pv >= 0
        pred_next = index("pred", t + k)
        if not ok.any() or len(pred_next) == 0:
            continue
        _, gp = pred_next.query(pts[pv[ok]])
        d = pred_next.group_distance(gp, true_next, gt[ok])
        pos += int((d <= window).sum())
    return pos, total


def temporal_consistency(pred_vertices: np.ndarray, true_vertices: np.ndarray, template_points: np.ndarray,
                         intervals: Sequence[int] = (1, 12, 120), window: float = 10, *, visible_tol: float = 0.02,
                         max_pairs: int = 64, max_pixels: int = 2000,
                         seed: int | np.random.Generator = 0) -> dict[int, float]:  # fmt: skip
    """Share of positive correspondence matches between frames k apart (BodyMap, Table 4): low = flicker.

    For a frame pair (t, t + k) and a true-foreground pixel p of frame t:

    * p counts only if its TRUE template point is visible in frame t + k: the nearest true point of
      frame t + k lies within ``visible_tol`` (metres, template space);
    * its *true location* in frame t + k is the set of pixels showing that nearest true point;
    * its *predicted location* is the set of pixels of frame t + k whose PREDICTED vertex is the
      predicted vertex nearest to p's predicted template point;
    * p is positive if the two locations come within ``window`` pixels (nearest pixels of the two
      sets, so a vertex covering several pixels is not penalised). Predicted background at p, or
      no predicted foreground in frame t + k, is negative.

    The result is positives / counted pixels over all sampled pairs. It measures consistency, not
    accuracy: a prediction that is wrong the same way in both frames is positive. Frame pairs
    (at most ``max_pairs`` per interval) and pixels (at most ``max_pixels`` per pair) are drawn
    with ``seed``; same seed -> same result. Like the window accuracy it depends on the resolution.

    Args:
        pred_vertices: (T, H, W) int predicted vertex per pixel, -1 = background.
        true_vertices: (T, H, W) int true vertex per pixel, -1 = no person.
        template_points: (Vt, 3) rest-pose template points (metres).
        intervals: frame intervals k ≥ 1.
        window: pixels.

    Returns:
        {k: share in [0, 1]}; NaN for an interval with no frame pair (T ≤ k) or no visible pixel.
    """
    pts = _check_points(template_points)
    pred = _check_map(pred_vertices, "pred_vertices", len(pts), ndim=3)
    true = _check_map(true_vertices, "true_vertices", len(pts), ndim=3)
    _same_shape(pred, true, "pred_vertices", "true_vertices")
    ks = tuple(int(k) for k in intervals)
    if not ks or min(ks) < 1:
        raise BodycorrError(f"intervals {ks}: need one or more frame intervals ≥ 1, e.g. (1, 12, 120).")
    if not (np.isfinite(window) and window >= 0 and visible_tol >= 0 and max_pairs >= 1 and max_pixels >= 1):
        raise BodycorrError(f"temporal_consistency: window {window} px and visible_tol {visible_tol} m must be ≥ 0, "
                            f"max_pairs {max_pairs} and max_pixels {max_pixels} ≥ 1.")  # fmt: skip
    rng = np.random.default_rng(seed)
    cache: dict[tuple[str, int], _VertexPixels] = {}

    def index(kind: str, t: int) -> _VertexPixels:
        if (kind, t) not in cache:
            cache[(kind, t)] = _VertexPixels((pred if kind == "pred" else true)[t], pts)
        return cache[(kind, t)]

    out = {}
    for k in ks:
        pos, total = _consistency_counts(pred, true, pts, k, window, visible_tol, max_pairs, max_pixels, rng, index)
        out[k] = pos / total if total else float("nan")
    return out


# ----------------------------------------------------------------------------------------------
# a report over many images
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SurfaceMetrics:
    """All surface-map metrics of a set of images.

    Attributes:
        num_images: images evaluated.
        num_pixels: true-foreground pixels (the window-accuracy denominator).
        resolution: (H, W) of the images when all share one, else None (window metrics depend on it).
        window_accuracy: {window px: share}, pooled over all pixels of all images.
        gps: list of (P_i,) GPS per image (empty list when no geodesic was given).
        apar: AP/AR over the GPS (None without geodesic or without persons).
        temporal: {interval: share} when the images were a sequence, else None.
    """

    num_images: int
    num_pixels: int
    resolution: tuple[int, int] | None
    window_accuracy: dict
    gps: list
    apar: APAR | None
    temporal: dict | None

    @property
    def mean_gps(self) -> float:
        """Mean GPS over all persons (NaN without GPS)."""
        g = np.concatenate(self.gps) if self.gps else np.empty(0)
        return float(g.mean()) if len(g) else float("nan")


def surface_report(pred_vertices: Sequence[np.ndarray], true_vertices: Sequence[np.ndarray],
                   template_points: np.ndarray,
                   *, instances: Sequence[np.ndarray | None] | None = None, geodesic: Geodesic | None = None,
                   det_scores: Sequence[np.ndarray] | None = None, windows: Sequence[float] = (5, 10, 20),
                   kappa: float = GPS_KAPPA, thresholds: Sequence[float] = GPS_THRESHOLDS, sequence: bool = False,
                   intervals: Sequence[int] = (1, 12, 120), window: float = 10,
                   seed: int = 0) -> SurfaceMetrics:  # fmt: skip
    """Window accuracy (pooled over pixels), GPS and AP/AR (with ``geodesic``), and temporal consistency
    (``sequence=True``: the images are consecutive frames) of lists of (H, W) vertex maps.

    ``instances``: per image an (H, W) person-id map or None (one person). ``det_scores``: per image
    (P_i,) confidences; None gives every detection confidence 1, so the ranking is the input order
    (COCO's stable sort) and AP then depends on it: pass real confidences when the model has them.
    """
    if len(pred_vertices) != len(true_vertices) or len(pred_vertices) == 0:
        raise BodycorrError(f"surface_report: {len(pred_vertices)} predictions for {len(true_vertices)} truths. "
                            "Pass one prediction per image, at least one image.")  # fmt: skip
    ws = _check_windows(windows)
    pts = _check_points(template_points)
    errs = [pixel_window_errors(p, t, pts) for p, t in zip(pred_vertices, true_vertices)]
    err = np.concatenate(errs)
    acc = {w: float((err <= w).mean()) if len(err) else float("nan") for w in ws}
    shapes = {np.shape(t) for t in true_vertices}
    gps: list = []
    apar = None
    if geodesic is not None:
        inst = list(instances) if instances is not None else [None] * len(true_vertices)
        if len(inst) != len(true_vertices):
            raise BodycorrError(f"instances: {len(inst)} maps for {len(true_vertices)} images. Pass one per image.")
        gps = [gps_scores(p, t, i, geodesic, kappa) for p, t, i in zip(pred_vertices, true_vertices, inst)]
        conf = list(det_scores) if det_scores is not None else [np.ones(len(g)) for g in gps]
        if sum(len(g) for g in gps):
            apar = gps_ap_ar(gps, conf, thresholds)
    temporal = None
    if sequence:
        temporal = temporal_consistency(np.stack(pred_vertices), np.stack(true_vertices), pts, intervals, window,
                                        seed=seed)  # fmt: skip
    return SurfaceMetrics(num_images=len(true_vertices), num_pixels=len(err),
                          resolution=tuple(shapes.pop()) if len(shapes) == 1 else None, window_accuracy=acc,
                          gps=gps, apar=apar, temporal=temporal)  # fmt: skip


def format_table(m: SurfaceMetrics) -> str:
    """A few terminal lines: accuracy per window, GPS AP/AR, temporal consistency (percentages)."""
    res = f"{m.resolution[1]}x{m.resolution[0]}" if m.resolution else "mixed sizes"
    persons = sum(len(g) for g in m.gps)
    lines = [f"surface metrics: {m.num_images} images ({res}), {m.num_pixels:,} true pixels, {persons} persons"]
    acc = "  ".join(f"{w:>4g}: {100 * a:5.1f}" for w, a in m.window_accuracy.items())
    lines.append(f"  2D accuracy, window px   {acc}")
    if m.apar is not None:
        a = m.apar
        lines.append(f"  GPS mean {m.mean_gps:.3f}   AP {100 * a.ap:5.1f}  AP50 {100 * a.ap50:5.1f}"
                     f"  AP75 {100 * a.ap75:5.1f}"
                     f"   AR {100 * a.ar:5.1f}  AR50 {100 * a.ar50:5.1f}  AR75 {100 * a.ar75:5.1f}")  # fmt: skip
    if m.temporal is not None:
        tc = "  ".join(f"{k:>4d}: {100 * v:5.1f}" for k, v in m.temporal.items())
        lines.append(f"  temporal consistency, interval   {tc}")
    return "\n".join(lines)
