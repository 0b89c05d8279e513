"""BodyMap surface-map metrics on tiny synthetic vertex maps: window accuracy steps at the shift, GPS of
perfect / shifted / missing predictions, COCO AP against a slow reference, temporal consistency of
translated, flickering and consistently wrong sequences, and input errors."""

import numpy as np
import pytest

from bodycorr.common.errors import BodycorrError
from bodycorr.evaluation.surface_metrics import (
    GPS_THRESHOLDS,
    SurfaceMetrics,
    format_table,
    gps_ap_ar,
    gps_scores,
    pixel_window_errors,
    surface_report,
    table_geodesic,
    temporal_consistency,
    window_accuracy,
)

G = 24  # grid template: G x G vertices
S = 0.05  # grid spacing, metres


def grid_points(g: int = G, s: float = S) -> np.ndarray:
    """(g², 3) template points: vertex r * g + c sits at (c s, r s, 0)."""
    r, c = np.mgrid[0:g, 0:g]
    return np.stack([c.ravel() * s, r.ravel() * s, np.zeros(g * g)], 1)


def place(h: int, w: int, y0: int, x0: int, g: int = G, block: int = 1, cols: np.ndarray | None = None) -> np.ndarray:
    """(h, w) map showing the g x g grid with its corner at (y0, x0), each vertex as a block x block square;
    ``cols`` remaps the grid column shown (e.g. a mirror). Parts outside the image are cropped."""
    out = np.full((h, w), -1, dtype=np.int64)
    r, c = np.mgrid[0 : g * block, 0 : g * block]
    vr, vc = r // block, c // block
    if cols is not None:
        vc = cols[vc]
    y, x = r + y0, c + x0
    ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    out[y[ok], x[ok]] = (vr * g + vc)[ok]
    return out


def euclid(points: np.ndarray):
    """On a flat grid the geodesic is the Euclidean distance."""
    return lambda a, b: np.linalg.norm(points[a] - points[b], axis=1)


# ----------------------------------------------------------------------------------------------
# window accuracy
# ----------------------------------------------------------------------------------------------


def test_perfect_prediction_is_exact_even_when_vertices_cover_several_pixels():
    pts = grid_points()
    true = place(60, 60, 5, 7, block=2)  # every vertex shows as a 2x2 square
    assert window_accuracy(true, true, pts, windows=(0, 5)) == {0: 1.0, 5: 1.0}
    assert np.all(pixel_window_errors(true, true, pts) == 0)


def test_accuracy_steps_at_the_shift():
    pts = grid_points()
    true = place(32, 32, 4, 4)
    k = 6
    # the prediction names the vertex k columns to the right; beyond the grid it says background
    pred = np.where(true >= 0, true + k, -1)
    pred[true >= 0] = np.where(true[true >= 0] % G + k < G, pred[true >= 0], -1)
    acc = window_accuracy(pred, true, pts, windows=(k - 1, k, 20))
    assert acc[k - 1] == 0.0
    assert acc[k] == pytest.approx((G - k) / G)
    assert acc[20] == pytest.approx((G - k) / G)


def test_background_prediction_scores_zero_and_extra_foreground_is_ignored():
    pts = grid_points()
    true = place(32, 32, 4, 4)
    assert window_accuracy(np.full_like(true, -1), true, pts) == {5: 0.0, 10: 0.0, 20: 0.0}
    pred = true.copy()
    pred[true < 0] = 0  # predicted foreground on true background: not in the denominator
    assert window_accuracy(pred, true, pts)[5] == 1.0


def test_random_prediction_is_low():
    pts = grid_points()
    true = place(32, 32, 4, 4)
    pred = np.where(true >= 0, np.random.default_rng(0).integers(0, G * G, true.shape), -1)
    acc = window_accuracy(pred, true, pts)
    assert acc[5] < 0.2 and acc[5] < acc[10] < acc[20]


def _slow_errors(pred, true, pts):
    """Per true pixel: brute-force nearest true point, ties between pixels -> nearest to p."""
    ys, xs = np.nonzero(true >= 0)
    tp = pts[true[ys, xs]]
    out = []
    for y, x in zip(ys, xs):
        if pred[y, x] < 0:
            out.append(np.inf)
            continue
        d = np.linalg.norm(tp - pts[pred[y, x]], axis=1)
        cand = d == d.min()
        out.append(np.hypot(ys[cand] - y, xs[cand] - x).min())
    return np.array(out)


@pytest.mark.parametrize("chunk", [None, 7])
def test_window_errors_match_a_slow_reference(chunk, monkeypatch):
    if chunk:  # tiny blocks of pixel pairs exercise the chunked tie resolution
        monkeypatch.setattr("bodycorr.evaluation.surface_metrics._CHUNK_PAIRS", chunk)
    rng = np.random.default_rng(3)
    pts = rng.normal(size=(40, 3))  # random points: the only ties are pixels showing the same vertex
    true = np.where(rng.random((18, 20)) < 0.7, rng.integers(0, 30, (18, 20)), -1)
    pred = np.where(rng.random((18, 20)) < 0.8, rng.integers(0, 40, (18, 20)), -1)
    np.testing.assert_allclose(pixel_window_errors(pred, true, pts), _slow_errors(pred, true, pts))


def test_window_accuracy_input_errors_and_empty_image():
    pts = grid_points()
    true = place(32, 32, 4, 4)
    acc = window_accuracy(true, np.full_like(true, -1), pts)
    assert all(np.isnan(v) for v in acc.values())  # no true foreground: NaN, documented
    with pytest.raises(BodycorrError, match="shapes differ"):
        window_accuracy(true[:-1], true, pts)
    with pytest.raises(BodycorrError, match="integer"):
        window_accuracy(true.astype(float), true, pts)
    with pytest.raises(BodycorrError, match="out of range"):
        window_accuracy(true + G * G, true, pts)
    with pytest.raises(BodycorrError, match="template_points"):
        window_accuracy(true, true, pts[:, :2])
    with pytest.raises(BodycorrError, match="windows"):
        window_accuracy(true, true, pts, windows=(-1,))


# ----------------------------------------------------------------------------------------------
# GPS
# ----------------------------------------------------------------------------------------------


def two_persons():
    a, b = place(30, 60, 3, 2), place(30, 60, 3, 32)
    true = np.where(a >= 0, a, b)
    inst = np.where(a >= 0, 0, np.where(b >= 0, 1, -1))
    return true, inst


def test_gps_perfect_shifted_and_missing_persons():
    pts = grid_points()
    true, inst = two_persons()
    geo = euclid(pts)
    np.testing.assert_allclose(gps_scores(true, true, inst, geo), [1.0, 1.0])
    # person 0 one row off (geodesic = S everywhere), person 1 predicted as background
    pred = np.where(inst == 0, true, -1)
    pred[inst == 0] = np.where(true[inst == 0] // G < G - 1, true[inst == 0] + G, true[inst == 0] - G)
    g = gps_scores(pred, true, inst, geo, kappa=0.1)
    np.testing.assert_allclose(g, [np.exp(-(S**2) / (2 * 0.1**2)), 0.0])
    # random vertices: low
    rnd = np.where(true >= 0, np.random.default_rng(1).integers(0, G * G, true.shape), -1)
    assert (gps_scores(rnd, true, inst, geo) < 0.3).all()
    # instance None: one person made of all the truth
    np.testing.assert_allclose(gps_scores(pred, true, None, geo, kappa=0.1), [g.mean()])


def test_gps_input_errors_and_empty_image():
    pts = grid_points()
    true, inst = two_persons()
    geo = euclid(pts)
    empty = np.full_like(true, -1)
    assert gps_scores(empty, empty, empty, geo).shape == (0,)
    with pytest.raises(BodycorrError, match="no annotated pixel"):
        gps_scores(true, true, np.where(inst == 1, 2, inst), geo)  # person 1 missing
    with pytest.raises(BodycorrError, match="instance -1"):
        gps_scores(true, true, np.where(inst == 1, -1, inst), geo)
    with pytest.raises(BodycorrError, match="shapes differ"):
        gps_scores(true, true, inst[:, :-1], geo)
    with pytest.raises(BodycorrError, match="geodesic"):
        gps_scores(true, true, inst, lambda a, b: np.full(len(a), np.nan))
    with pytest.raises(BodycorrError, match="outside"):
        gps_scores(true, true, inst, table_geodesic(np.zeros((10, 10))))


@pytest.mark.slow
def test_template_geodesic_table():
    from bodycorr.body.template import get_template
    from bodycorr.evaluation.surface_metrics import template_geodesic_fn

    geo = template_geodesic_fn()
    v = get_template().mesh.vertices
    a, b = np.random.default_rng(0).integers(0, len(v), (2, 200))
    d = geo(a, b)
    np.testing.assert_allclose(d, geo(b, a))
    assert np.all(geo(a, a) == 0)
    assert np.all(d >= np.linalg.norm(v[a] - v[b], axis=1) - 2e-3)  # float16 table, ≤ 1 mm rounding
    assert template_geodesic_fn() is geo  # loaded once


# ----------------------------------------------------------------------------------------------
# AP / AR
# ----------------------------------------------------------------------------------------------


def slow_coco_ap_ar(gps, conf, thresholds):
    """COCOeval.accumulate for one category, one area range, written out loop by loop."""
    g, s = np.concatenate(gps), np.concatenate(conf)
    npos = len(g)
    dets = sorted([(s[i], i) for i in range(npos) if not (np.isnan(g[i]) or np.isnan(s[i]))],
                  key=lambda p: -p[0])  # fmt: skip  # stable, like COCO's mergesort
    rec_thr = np.linspace(0.0, 1.0, 101)
    aps, ars = [], []
    for t in thresholds:
        tp = fp = 0
        rc, pr = [], []
        for _, i in dets:
            if g[i] >= t:
                tp += 1
            else:
                fp += 1
            rc.append(tp / npos)
            pr.append(tp / (tp + fp))
        for i in range(len(pr) - 1, 0, -1):
            if pr[i] > pr[i - 1]:
                pr[i - 1] = pr[i]
        q = [0.0] * len(rec_thr)
        for ri, r in enumerate(rec_thr):
            pi = int(np.searchsorted(rc, r, side="left"))
            if pi >= len(pr):
                break
            q[ri] = pr[pi]
        aps.append(np.mean(q))
        ars.append(rc[-1] if rc else 0.0)
    return np.array(aps), np.array(ars)


def test_ap_ar_match_the_slow_reference():
    rng = np.random.default_rng(7)
    for trial in range(5):
        sizes = rng.integers(0, 6, 8)
        gps = [rng.beta(4, 1.5, n) for n in sizes]
        conf = [np.round(rng.random(n), 1) for n in sizes]  # rounded: many ties
        for g in gps:
            g[rng.random(len(g)) < 0.15] = np.nan  # missed persons
        res = gps_ap_ar(gps, conf)
        aps, ars = slow_coco_ap_ar(gps, conf, GPS_THRESHOLDS)
        np.testing.assert_allclose(res.ap_per_threshold, aps, atol=1e-12)
        np.testing.assert_allclose(res.ar_per_threshold, ars, atol=1e-12)
        assert res.ap == pytest.approx(aps.mean()) and res.ar == pytest.approx(ars.mean())


def test_ap_ar_by_hand():
    perfect = gps_ap_ar([np.ones(3), np.ones(2)], [np.full(3, 0.9), np.full(2, 0.1)])
    assert (perfect.ap, perfect.ar, perfect.ap50, perfect.ar75) == (1.0, 1.0, 1.0, 1.0)
    # two persons: the sure one has GPS 0.8, the other 0.3
    r = gps_ap_ar([np.array([0.8, 0.3])], [np.array([0.9, 0.5])])
    assert r.ap50 == pytest.approx(51 / 101) and r.ar50 == 0.5 and r.ar75 == 0.5
    assert r.ap == pytest.approx(0.7 * 51 / 101) and r.ar == pytest.approx(0.35)
    # ranking the bad detection first costs precision
    worse = gps_ap_ar([np.array([0.8, 0.3])], [np.array([0.5, 0.9])])
    assert worse.ap50 == pytest.approx(0.5 * 51 / 101) and worse.ar50 == 0.5
    # a missed person is a false negative: by NaN score or by the detected flag
    missed = gps_ap_ar([np.array([1.0, np.nan])], [np.array([0.9, 0.9])])
    flag = gps_ap_ar([np.array([1.0, 1.0])], [np.array([0.9, 0.9])], detected=[np.array([True, False])])
    assert missed.ap == flag.ap == pytest.approx(51 / 101) and missed.ar == flag.ar == 0.5
    assert (missed.num_persons, missed.num_detections) == (2, 1)
    nothing = gps_ap_ar([np.array([np.nan])], [np.array([0.5])])
    assert (nothing.ap, nothing.ar) == (0.0, 0.0)


def test_ap_ar_input_errors():
    with pytest.raises(BodycorrError, match="no persons"):
        gps_ap_ar([np.empty(0)], [np.empty(0)])
    with pytest.raises(BodycorrError, match="same length"):
        gps_ap_ar([np.ones(2)], [np.ones(3)])
    with pytest.raises(BodycorrError, match=r"\[0, 1\]"):
        gps_ap_ar([np.array([1.5])], [np.ones(1)])


# ----------------------------------------------------------------------------------------------
# temporal consistency
# ----------------------------------------------------------------------------------------------

T, H, W = 14, 40, 48


def walking(t_frames: int = T, g: int = G, cols=None) -> np.ndarray:
    """(T, H, W) the grid translating one pixel right per frame."""
    return np.stack([place(H, W, 6, 2 + t, g=g, cols=cols) for t in range(t_frames)])


def test_perfect_and_translated_sequences_are_consistent():
    pts = grid_points()
    true = walking()
    assert temporal_consistency(true, true, pts, intervals=(1, 5, 13)) == {1: 1.0, 5: 1.0, 13: 1.0}
    # intervals longer than the sequence: NaN, documented
    assert np.isnan(temporal_consistency(true, true, pts, intervals=(T,))[T])


def test_flicker_is_inconsistent_but_consistent_errors_are_not():
    pts = grid_points()
    true = walking()
    mirror = walking(cols=np.arange(G)[::-1])
    flicker = np.where((np.arange(T) % 2 == 1)[:, None, None], mirror, true)
    window = 10
    res = temporal_consistency(flicker, true, pts, intervals=(1, 2), window=window)
    # k = 1: grid column c is predicted at column G-1-c in the other frame: positive iff |G-1-2c| <= window
    c = np.arange(G)
    assert res[1] == pytest.approx((np.abs(G - 1 - 2 * c) <= window).mean())
    assert res[2] == 1.0  # wrong the same way two frames apart: consistent
    assert temporal_consistency(mirror, true, pts, intervals=(1, 3))[3] == 1.0


def test_invisible_points_are_not_counted():
    pts = grid_points()
    true = walking()
    true[1:, :, :] = np.where(true[1:] % G < G // 2, true[1:], -1)  # later frames show only the left half
    pred = true.copy()
    pred[0][true[0] % G >= G // 2] = -1  # frame 0 gets the right half wrong, but it is never visible later
    assert temporal_consistency(pred, true, pts, intervals=(1, 4))[4] == 1.0
    pred[0][(true[0] >= 0) & (true[0] % G < 3)] = -1  # a visible strip now fails
    assert temporal_consistency(pred, true, pts, intervals=(4,))[4] == pytest.approx(1 - 3 / (G // 2) * 1 / (T - 4))


def _slow_consistency(pred, true, pts, k, window, tol):
    pos = tot = 0
    for t in range(len(true) - k):
        ys, xs = np.nonzero(true[t] >= 0)
        ny, nx = np.nonzero(true[t + k] >= 0)
        py, px = np.nonzero(pred[t + k] >= 0)
        if len(ny) == 0:
            continue
        for y, x in zip(ys, xs):
            d = np.linalg.norm(pts[true[t + k][ny, nx]] - pts[true[t][y, x]], axis=1)
            if d.min() > tol:
                continue
            tot += 1
            if pred[t][y, x] < 0 or len(py) == 0:
                continue
            tset = np.stack([ny, nx], 1)[d == d.min()]
            e = np.linalg.norm(pts[pred[t + k][py, px]] - pts[pred[t][y, x]], axis=1)
            pset = np.stack([py, px], 1)[e == e.min()]
            gap = np.linalg.norm(tset[:, None, :] - pset[None, :, :], axis=2).min()
            pos += gap <= window
    return pos / tot


def test_consistency_matches_a_slow_reference_and_subsampling_is_seeded():
    rng = np.random.default_rng(11)
    pts = rng.normal(size=(60, 3)) * 0.1
    true = np.where(rng.random((6, 10, 12)) < 0.7, rng.integers(0, 50, (6, 10, 12)), -1)
    pred = np.where(rng.random((6, 10, 12)) < 0.8, rng.integers(0, 60, (6, 10, 12)), -1)
    fast = temporal_consistency(pred, true, pts, intervals=(1, 3), window=4, visible_tol=0.05)
    for k in (1, 3):
        assert fast[k] == pytest.approx(_slow_consistency(pred, true, pts, k, 4, 0.05))
    sub = dict(intervals=(1, 3), window=4, visible_tol=0.05, max_pairs=2, max_pixels=20)
    a = temporal_consistency(pred, true, pts, seed=1, **sub)
    assert a == temporal_consistency(pred, true, pts, seed=1, **sub)
    assert a != temporal_consistency(pred, true, pts, seed=2, **sub)


def test_consistency_input_errors():
    pts = grid_points()
    true = walking(4)
    with pytest.raises(BodycorrError, match=r"\(T, H, W\)"):
        temporal_consistency(true[0], true[0], pts)
    with pytest.raises(BodycorrError, match="shapes differ"):
        temporal_consistency(true[:3], true, pts)
    with pytest.raises(BodycorrError, match="intervals"):
        temporal_consistency(true, true, pts, intervals=(0,))


def test_consistency_is_fast_on_a_150_frame_128px_sequence():
    import time

    pts = grid_points(60, 0.02)
    true = np.stack([place(128, 128, 10 + (t // 10) % 5, (t * 3) % 60, g=60) for t in range(150)])
    noisy = np.where(np.random.default_rng(0).random(true.shape) < 0.05, -1, true)
    t0 = time.perf_counter()
    res = temporal_consistency(noisy, true, pts)
    assert time.perf_counter() - t0 < 5.0
    assert 0.85 < res[1] < 1.0 and 0.85 < res[120] < 1.0  # 5 % dropped pixels, otherwise consistent


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------


def test_surface_report_and_table():
    pts = grid_points()
    true = walking(6)
    pred = true.copy()
    pred[3] = -1  # one frame predicted as background
    m = surface_report(list(pred), list(true), pts, geodesic=euclid(pts), sequence=True, intervals=(1, 2))
    assert isinstance(m, SurfaceMetrics) and m.num_images == 6 and m.resolution == (H, W)
    assert m.num_pixels == int((true >= 0).sum())
    assert m.window_accuracy[5] == pytest.approx(5 / 6)  # pooled over pixels, frames equally large
    np.testing.assert_allclose(np.concatenate(m.gps), [1, 1, 1, 0, 1, 1])
    assert m.mean_gps == pytest.approx(5 / 6) and m.apar.ar == pytest.approx(5 / 6)
    # pairs (t, t+2): (1, 3) has no predicted foreground in frame 3, (3, 5) none in frame 3 itself
    assert m.temporal == {1: pytest.approx(3 / 5), 2: pytest.approx(2 / 4)}
    text = format_table(m)
    assert "83.3" in text and "AP" in text and "temporal" in text
    bare = surface_report([true[0]], [true[0]], pts)
    assert bare.apar is None and bare.temporal is None and np.isnan(bare.mean_gps)
    with pytest.raises(BodycorrError, match="predictions"):
        surface_report([true[0]], [], pts)
