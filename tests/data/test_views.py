import dataclasses
import json

import numpy as np
import pytest

from bodycorr.common.errors import BodycorrError
from bodycorr.data.datasets import ShardDataset
from bodycorr.data.shards import generate_shards, load_shard, shard_name
from bodycorr.data.views import ViewConfig, ViewGenerator

pytestmark = pytest.mark.slow
TINY = ViewConfig(size=48, views_per_body=2, poses_per_identity=2)


def test_views_carry_exact_truth(template):
    gen = ViewGenerator(TINY, "train", seed=0)
    v = gen.views_of_body(0)[0]
    m = v.template_vertex >= 0
    assert m.sum() > 100
    assert (v.depth[m] > 0).all()
    # the person fills the crop
    rows, cols = np.nonzero(m)
    assert max(np.ptp(rows), np.ptp(cols)) > 0.5 * TINY.size
    # the truth triangle contains the truth vertex
    assert (template.mesh.faces[v.template_face[m]] == v.template_vertex[m][:, None]).any(1).all()


def test_same_seed_same_bytes_and_resume(tmp_path):
    a = generate_shards(tmp_path / "a", "train", 6, TINY, seed=3, shard_size=4, progress=False)
    b = generate_shards(tmp_path / "b", "train", 6, TINY, seed=3, shard_size=4, progress=False)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    c = generate_shards(tmp_path / "c", "train", 6, TINY, seed=4, shard_size=4, progress=False)
    assert a[0].read_bytes() != c[0].read_bytes()
    # an interrupted run leaves a broken shard: the rerun remakes it and keeps the good one
    first_mtime = a[0].stat().st_mtime_ns
    a[1].write_bytes(a[1].read_bytes()[:100])
    again = generate_shards(tmp_path / "a", "train", 6, TINY, seed=3, shard_size=4, progress=False)
    assert again[1].read_bytes() == b[1].read_bytes()
    assert again[0].stat().st_mtime_ns == first_mtime
    ds = ShardDataset(tmp_path / "a" / "train")
    assert len(ds) == 6
    item = ds[5]
    assert item["depth"].shape == (1, 48, 48) and item["vertex"].shape == (48, 48)


def test_other_settings_in_same_folder_refused(tmp_path):
    generate_shards(tmp_path, "train", 2, TINY, seed=0, shard_size=2, progress=False)
    with pytest.raises(BodycorrError, match="other settings"):
        generate_shards(tmp_path, "train", 2, dataclasses.replace(TINY, size=32), seed=0, shard_size=2, progress=False)


def test_corrupt_shard_is_one_line(tmp_path):
    p = tmp_path / shard_name(0)
    p.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(BodycorrError, match="corrupt"):
        load_shard(p)


def test_splits_do_not_share_identities():
    tr = ViewGenerator(TINY, "train", seed=0)
    te = ViewGenerator(TINY, "test", seed=0)
    ptr = {tuple(tr.body(b)[1].round(6)) for b in range(0, 8, 2)}
    pte = {tuple(te.body(b)[1].round(6)) for b in range(0, 8, 2)}
    assert not ptr & pte


def test_block_posing_matches_one_body_at_a_time():
    """Bodies are posed in blocks (one batched sampler + Anny call): the same poses as posing each
    body alone, vertices equal to float rounding, and nothing depends on the order of requests."""
    from bodycorr.body.shape import identity_rng, sample_identity
    from bodycorr.data.views import POSE_BLOCK

    gen = ViewGenerator(TINY, "train", seed=5)
    for b in (0, 3, POSE_BLOCK + 1):
        verts, phen, ident = gen.body(b)
        assert ident == b // TINY.poses_per_identity
        assert np.array_equal(phen, sample_identity("train", ident, 5).phenotypes)
        pose = gen.poses(1, identity_rng("train", b, 5 + 1_000_003))
        ref = gen.model(phen[None], pose).vertices[0]
        ref = ref - np.array([*ref[:, :2].mean(0), ref[:, 2].min()], dtype=np.float32)
        assert np.abs(verts - ref).max() < 1e-5  # metres
    rngs = [identity_rng("train", b, 9) for b in range(5)]
    assert np.array_equal(gen.poses.each(rngs), np.concatenate([gen.poses(1, identity_rng("train", b, 9)) for b in range(5)]))
    # the same bytes whatever was asked for before
    a = ViewGenerator(TINY, "train", seed=5).views_of_body(POSE_BLOCK + 2)
    other = ViewGenerator(TINY, "train", seed=5)
    other.views_of_body(3)
    other.views_of_body(7 * POSE_BLOCK)
    b = other.views_of_body(POSE_BLOCK + 2)
    for x, y in zip(a, b):
        for k in ("depth", "template_vertex", "template_face", "template_bary"):
            assert getattr(x, k).tobytes() == getattr(y, k).tobytes()
        assert np.array_equal(x.camera.R, y.camera.R) and x.camera.intrinsics == y.camera.intrinsics
    with pytest.raises(BodycorrError, match="body index"):
        gen.views_of_body(-1)


def test_body_truth_equals_per_pixel_mapping(template):
    """body_truth (flat indices) gives exactly Template.map_full_points of every seen pixel."""
    from bodycorr.data.views import sensor_intrinsics
    from bodycorr.render.frame import render
    from bodycorr.render.raycast import RayCaster
    from bodycorr.render.rig import random_camera
    from bodycorr.render.truth import body_truth

    gen = ViewGenerator(TINY, "train", seed=1)
    verts = gen.body(2)[0]
    cam = random_camera(np.random.default_rng(0), sensor_intrinsics(TINY), verts.mean(0), (1.5, 2.0))
    frame = render(RayCaster(verts, gen.model.faces), cam)
    truth = body_truth(frame, template)
    m = frame.face >= 0
    assert m.sum() > 100
    f, b, v = template.map_full_points(frame.face[m], frame.bary[m])
    assert np.array_equal(truth.template_face[m], f) and np.array_equal(truth.template_vertex[m], v)
    assert np.array_equal(truth.template_bary[m], b)
    assert (truth.template_face[~m] == -1).all() and (truth.template_vertex[~m] == -1).all() and not truth.template_bary[~m].any()
    assert truth.template_face.dtype == np.int32 and truth.template_bary.dtype == np.float32


def test_shards_same_bytes_with_worker_processes(tmp_path):
    """Worker processes (torch on one thread each) write the same bytes as the main process."""
    one = generate_shards(tmp_path / "one", "train", 8, TINY, seed=2, shard_size=4, progress=False)
    two = generate_shards(tmp_path / "two", "train", 8, TINY, seed=2, shard_size=4, workers=2, progress=False)
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]


# ------------------------------------------------------------------------------------------------
# Clothed people (render.garments in the depth engine).
# ------------------------------------------------------------------------------------------------


def _view_bytes(views):
    return [(v.depth.tobytes(), v.template_vertex.tobytes(), v.template_face.tobytes(), v.template_bary.tobytes(),
             v.camera.R.tobytes(), v.camera.intrinsics) for v in views]  # fmt: skip


def test_clothing_off_by_default_leaves_views_and_shard_settings_unchanged():
    from dataclasses import asdict

    from bodycorr.data.views import view_config_dict
    from bodycorr.render.garments import GarmentConfig

    assert TINY.clothed_share == 0
    other_garments = dataclasses.replace(TINY, garments=GarmentConfig(kinds=("dress",)))
    a = ViewGenerator(TINY, "train", seed=4)
    b = ViewGenerator(other_garments, "train", seed=4)
    assert _view_bytes(a.views_of_body(1)) == _view_bytes(b.views_of_body(1))
    assert a.outfit(0) is None and not a.views_of_body(1)[0].extras
    # shard folders written before clothing existed carry the same settings
    d = view_config_dict(TINY)
    assert "clothed_share" not in d and "garments" not in d
    assert d == {k: v for k, v in asdict(TINY).items() if k not in ("clothed_share", "garments")}
    on = dataclasses.replace(TINY, clothed_share=0.5)
    back = json.loads(json.dumps(view_config_dict(on)))
    assert ViewConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in back.items()}) == on  # the worker round trip
    with pytest.raises(BodycorrError, match="clothed_share"):
        ViewConfig(clothed_share=1.5)


def test_a_person_keeps_one_outfit_and_the_share_is_respected():
    cfg = dataclasses.replace(TINY, clothed_share=0.5)
    gen = ViewGenerator(cfg, "train", seed=0)
    outfits = [gen.outfit(i) for i in range(60)]
    assert 0.3 < np.mean([o is not None for o in outfits]) < 0.7
    assert len({o for o in outfits if o is not None}) == sum(o is not None for o in outfits)  # each person their own
    assert ViewGenerator(cfg, "train", seed=0).outfit(7) == outfits[7]  # seeded
    everyone = ViewGenerator(dataclasses.replace(TINY, clothed_share=1.0), "train", seed=0)
    assert all(everyone.outfit(i) == o for i, o in enumerate(outfits) if o is not None)  # more share: the same outfits, more people
    ident = next(i for i, o in enumerate(outfits) if o is not None)
    bodies = [b for b in range(ident * TINY.poses_per_identity, (ident + 1) * TINY.poses_per_identity)]
    seen = [v.extras["outfit"] for b in bodies for v in gen.views_of_body(b)]
    assert len(seen) == TINY.poses_per_identity * TINY.views_per_body and all(o == outfits[ident] for o in seen)


def test_clothed_views_see_the_garments_with_the_body_truth_under_them(template):
    """The same person and cameras clothed (snug top and trousers, no hair) and bare: the clothed
    surface is nearer the camera by about the cloth's thickness and the truth is the same body point."""
    from bodycorr.render.garments import GarmentConfig

    bare_cfg = ViewConfig(size=96, views_per_body=2, poses_per_identity=1, noise="none")
    snug = GarmentConfig(kinds=("tight_top", "trousers"), tight=(0.003, 0.004), loose=(0.003, 0.004))
    dressed_cfg = dataclasses.replace(bare_cfg, clothed_share=1.0, garments=snug)
    bare, dressed = ViewGenerator(bare_cfg, "train", seed=3), ViewGenerator(dressed_cfg, "train", seed=3)
    for b in (0, 1):
        for vb, vd in zip(bare.views_of_body(b), dressed.views_of_body(b)):
            assert np.array_equal(vb.camera.R, vd.camera.R) and vb.camera.intrinsics == vd.camera.intrinsics
            assert vd.extras["outfit"].top == "tight_top"
            both = (vb.template_vertex >= 0) & (vd.template_vertex >= 0)
            assert both.sum() > 500 and (vd.template_vertex >= 0).sum() >= (vb.template_vertex >= 0).sum()
            gap = vb.depth[both] - vd.depth[both]
            assert (gap > -1e-3).mean() > 0.97 and 0.003 < np.median(gap) < 0.012  # nearer by the cloth (oblique: more)
            same = vd.template_vertex[both] == vb.template_vertex[both]
            assert same.mean() > 0.6
            tv = template.mesh.vertices
            dist = np.linalg.norm(tv[vd.template_vertex[both]] - tv[vb.template_vertex[both]], axis=1)
            assert np.quantile(dist, 0.9) < 0.025  # else the body point under the cloth: a neighbour (silhouettes: more)
