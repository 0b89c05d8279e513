"""The pruned exact nearest-neighbour search ("blocks") against the brute-force reference."""

import numpy as np
import pytest

from bodycorr.common.errors import BodycorrError
from bodycorr.matching import nearest
from bodycorr.matching.correspond import match
from bodycorr.matching.nearest import Neighbours, knn, knn_reference, nearest_both


@pytest.fixture
def small_blocks(monkeypatch):
    """Tiny leaves and groups, and no small-problem shortcut, so small inputs take every path."""
    monkeypatch.setattr(nearest, "SMALL", 0)
    monkeypatch.setattr(nearest, "LEAF", 12)
    monkeypatch.setattr(nearest, "GROUP", 24)
    monkeypatch.setattr(nearest, "FIRST", 24)


def _surface(rng, n, dim=16, noise=0.0):
    """Unit descriptors that are a smooth function of a point on a 2-D surface (like a body's)."""
    uv = rng.uniform(0, 1, size=(n, 2))
    freq = np.random.default_rng(0).normal(size=(2, dim)) * 2.0  # the same map for every call
    phase = np.random.default_rng(1).uniform(0, 2 * np.pi, dim)
    x = np.sin(uv @ freq + phase) + noise * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _assert_exact(got, ref, q, db):
    """Each returned point is a nearest one and its distance right, up to float32 rounding of a
    squared distance (1e-5); the index is the reference's unless the second nearest is as near."""
    d2 = ((q[:, None, :].astype(np.float64) - db[None]) ** 2).sum(-1)
    rows = np.arange(len(q))
    best = d2.min(1)
    assert (d2[rows, got.index[:, 0]] <= best + 1e-5).all()
    assert np.allclose(got.distance[:, 0].astype(np.float64) ** 2, best, atol=1e-5)
    second = np.partition(d2, 1, axis=1)[:, 1]
    clear = second - best > 1e-4
    assert clear.mean() > 0.5
    assert np.array_equal(got.index[clear, 0], ref.index[clear, 0])


@pytest.mark.parametrize("data", ["random", "surface", "surface_with_repeats"])
def test_blocks_match_reference(rng, small_blocks, data):
    if data == "random":
        q, db = rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(400, 16)).astype(np.float32)
    else:
        q, db = _surface(rng, 300, noise=0.02), _surface(rng, 400, noise=0.02)
        if data == "surface_with_repeats":  # runs of identical descriptors (filled unseen vertices)
            db[100:160] = db[100]
            q[:40] = q[0]
    got, ref = knn(q, db), knn_reference(q, db)
    _assert_exact(got, ref, q, db)
    fw, bw = nearest_both(q, db)
    _assert_exact(fw, ref, q, db)
    _assert_exact(bw, knn_reference(db, q), db, q)


def test_blocks_prune_on_surface_data(rng, small_blocks, monkeypatch):
    """On smooth low-dimensional data most leaf pairs are skipped (the point of the backend)."""
    pairs = []
    real_knn = None

    def counting_knn(x, y, k):
        pairs.append(len(x) * len(y))
        return real_knn(x, y, k)

    import faiss

    real_knn = faiss.knn
    monkeypatch.setattr(faiss, "knn", counting_knn)
    q, db = _surface(rng, 1500), _surface(rng, 1500)
    got = knn(q, db)
    assert sum(pairs) < 0.5 * len(q) * len(db)
    monkeypatch.setattr(faiss, "knn", real_knn)
    _assert_exact(got, knn_reference(q, db), q, db)


def test_backward_hit_searches_only_chosen_targets(rng, small_blocks):
    a, b = _surface(rng, 250, noise=0.05), _surface(rng, 350, noise=0.05)
    for backend in ("blocks", "faiss"):
        fw, bw = nearest_both(a, b, backend=backend, backward="hit")
        hit = np.zeros(len(b), bool)
        hit[fw.index[:, 0]] = True
        assert (bw.index[~hit, 0] == -1).all() and np.isinf(bw.distance[~hit, 0]).all()
        _assert_exact(Neighbours(bw.index[hit], bw.distance[hit]), knn_reference(b[hit], a), b[hit], a)


def test_match_mutual_flags_follow_the_reference(rng, small_blocks):
    a, b = _surface(rng, 250, noise=0.05), _surface(rng, 350, noise=0.05)
    fw, bw = knn_reference(a, b), knn_reference(b, a)
    expected = bw.index[fw.index[:, 0], 0] == np.arange(len(a))
    for backend in ("blocks", "faiss"):
        c = match(a, b, backend=backend)
        assert np.array_equal(c.target, fw.index[:, 0])
        assert np.array_equal(c.mutual, expected)


def test_small_problems_and_bad_backend(rng):
    q, db = rng.normal(size=(50, 16)), rng.normal(size=(60, 16))
    _assert_exact(knn(q, db), knn_reference(q, db), q, db)  # below SMALL: plain faiss
    with pytest.raises(BodycorrError, match="backend"):
        knn(q, db, backend="annoy")
    with pytest.raises(BodycorrError, match="backward"):
        nearest_both(q, db, backward="some")
