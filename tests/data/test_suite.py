"""The fixed test suites: shipped parameters, rebuilt without drawing poses again."""

from __future__ import annotations

import numpy as np
import pytest

from bodycorr.common.errors import BodycorrError
from bodycorr.data import suite as suite_mod


def test_pcg_state_round_trip_continues_the_stream():
    rng = np.random.default_rng(np.random.SeedSequence([3, 1, 4]))
    rng.normal(size=7)
    rng.integers(0, 2**32, dtype=np.uint32)  # leaves a buffered half-word in the state
    state = suite_mod._pcg_state(rng)
    assert state.dtype == np.uint64 and state.shape == (6,)
    want = (rng.normal(size=5), rng.random(3), rng.integers(0, 2**32, size=3, dtype=np.uint32))
    again = suite_mod._pcg_generator(state)
    got = (again.normal(size=5), again.random(3), again.integers(0, 2**32, size=3, dtype=np.uint32))
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)


def test_shipped_parameters_describe_the_suite():
    p = suite_mod.load_parameters("synthetic-v1")
    spec = suite_mod.SUITES["synthetic-v1"]
    S = spec["identities"] * spec["poses"]
    assert p["angles"].shape[0] == S and p["phenotypes"].shape == (S, 6) and p["noise_rng"].shape == (S, 6)
    assert np.all((p["phenotypes"] >= 0) & (p["phenotypes"] <= 1))
    np.testing.assert_allclose(p["R"] @ p["R"].transpose(0, 2, 1), np.broadcast_to(np.eye(3), (S, 3, 3)), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(p["global_rotation"]), 1.0, atol=1e-9)
    assert all(s for s in p["sources"])
    ident = p["identity"]
    assert p["intra"].shape == (spec["intra"], 2) and p["inter"].shape == (spec["inter"], 2)
    assert np.all(ident[p["intra"][:, 0]] == ident[p["intra"][:, 1]])
    assert np.all(ident[p["inter"][:, 0]] != ident[p["inter"][:, 1]])
    assert len({tuple(x) for x in p["noise_rng"][:, :4]}) == S  # every view its own noise stream


def test_build_poses_and_renders_without_drawing_poses(monkeypatch):
    """A shape is rebuilt from its stored pose and camera alone (the pose sampler is never asked),
    and the camera sees the posed body: each pixel's depth is its truth vertex's camera depth."""
    from bodycorr.body import pose as pose_mod

    def refuse(*a, **k):
        raise AssertionError("the suite must not draw poses")

    monkeypatch.setattr(pose_mod.PoseSampler, "sample", refuse)
    p = suite_mod.load_parameters("synthetic-v1")
    a = suite_mod._build(p, shapes=[0, 37])
    assert a["vertices"].shape == (2, 13348, 3) and a["depth_clean"].shape[0] == 2
    assert list(a["identity"]) == list(p["identity"][[0, 37]])
    for j, s in enumerate((0, 37)):
        v = a["vertices"][j].astype(np.float64)
        assert abs(v[:, 2].min()) < 1e-5  # standing on the floor, z up
        vert, depth = a["vertex_clean"][j], a["depth_clean"][j]
        seen = vert >= 0
        assert seen.sum() > 2000 and np.all(depth[seen] > 0)
        z_cam = (v[vert[seen]] @ p["R"][s].T + p["t"][s])[:, 2]
        assert np.median(np.abs(z_cam - depth[seen])) < 0.01  # within a triangle's size of the surface
        noisy = a["depth_noisy"][j]
        assert not np.array_equal(noisy, depth) and np.median(np.abs(noisy - depth)[seen & (noisy > 0)]) < 0.01


def test_missing_parameters_say_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(suite_mod, "PARAMETERS_DIR", tmp_path)
    with pytest.raises(BodycorrError, match="reinstall bodycorr"):
        suite_mod.load_parameters("synthetic-v1")
    (tmp_path / "synthetic-v1.npz").write_bytes(b"not a zip")
    with pytest.raises(BodycorrError, match="cannot read"):
        suite_mod.load_parameters("synthetic-v1")
    with pytest.raises(BodycorrError, match="unknown"):
        suite_mod.load_parameters("synthetic-v9")


def test_clothed_outfits_ship_with_the_suite_and_cover_every_garment():
    from bodycorr.render.garments import unpack_outfits

    outfits = suite_mod.load_outfits("synthetic-v1")
    assert [(o.top, o.bottom) for o in outfits] == list(suite_mod.CLOTHED_PLAN)
    assert {o.bottom for o in outfits} == {"trousers", "shorts", "skirt", "dress"} and sum(o.hair_volume > 0 for o in outfits) >= 8
    assert "synthetic-v1-clothed" in suite_mod.suite_names()
    assert unpack_outfits(suite_mod.freeze_outfits("synthetic-v1")) == outfits  # the frozen file is what its recipe draws


def test_clothed_variant_same_bytes_twice_and_the_bare_suite_untouched():
    """The clothed shapes rebuild to the same bytes; they are the bare shapes' people, poses, cameras
    and noise streams, nearer the camera by the cloth, with the truth of the body under it."""
    p = suite_mod.load_parameters("synthetic-v1")
    outfits = suite_mod.load_outfits("synthetic-v1")
    shapes = [3, 58]  # identity 0 (trousers) and 5 (skirt)
    a = suite_mod._build(p, shapes=shapes, outfits=outfits)
    b = suite_mod._build(p, shapes=shapes, outfits=outfits)
    assert sorted(a) == sorted(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)
    bare = suite_mod._build(p, shapes=shapes)
    full = suite_mod.load_suite("synthetic-v1")  # the bare suite: the same arrays as the bare build
    for k in ("vertices", "depth_clean", "depth_noisy", "vertex_clean", "vertex_noisy", "R", "t"):
        assert np.array_equal(getattr(full, k)[shapes], bare[k]), k
        if k in ("R", "t"):
            assert np.array_equal(a[k], bare[k])
    moved = np.linalg.norm(a["vertices"] - bare["vertices"], axis=2)
    assert (moved > 0.002).mean() > 0.3 and moved.max() < 0.25
    for j in range(len(shapes)):
        both = (a["vertex_clean"][j] >= 0) & (bare["vertex_clean"][j] >= 0)
        assert (a["depth_clean"][j][both] <= bare["depth_clean"][j][both] + 1e-4).mean() > 0.99
        assert (a["vertex_clean"][j] >= 0).sum() > (bare["vertex_clean"][j] >= 0).sum()
    skirt = a["vertex_clean"][1] >= 0
    assert skirt.sum() > 1.1 * (bare["vertex_clean"][1] >= 0).sum()  # the skirt covers more of the image


def test_clothed_suite_without_its_outfits_says_how_to_fix(monkeypatch, tmp_path):
    import shutil

    shutil.copy(suite_mod.parameters_path("synthetic-v1"), tmp_path / "synthetic-v1.npz")
    monkeypatch.setattr(suite_mod, "PARAMETERS_DIR", tmp_path)
    with pytest.raises(BodycorrError, match="outfits .* missing; reinstall bodycorr"):
        suite_mod.load_suite("synthetic-v1-clothed")
    (tmp_path / "synthetic-v1-clothed.npz").write_bytes(b"not a zip")
    with pytest.raises(BodycorrError, match="cannot read"):
        suite_mod.load_outfits("synthetic-v1")
    with pytest.raises(BodycorrError, match="synthetic-v1-clothed"):
        suite_mod.load_suite("synthetic-v2-clothed")  # unknown: the error lists the known ones
