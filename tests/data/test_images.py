import dataclasses

import numpy as np
import pytest

from bodycorr.common.errors import BodycorrError
from bodycorr.data.images import ImageConfig, ImageShardDataset, ImageViewGenerator, generate_image_shards, load_image_shard
from bodycorr.data.shards import shard_name

# No crowds, crops, occluders or jitter unless a test turns them on.
PLAIN = ImageConfig(size=48, views_per_body=2, poses_per_identity=2, multi_person_share=0.0, upper_body_share=0.0,
                    occluder_share=0.0, colour_jitter=0.0)  # fmt: skip


@pytest.fixture(scope="module")
def plain():
    return ImageViewGenerator(PLAIN, "train", seed=0)


def test_bad_config_is_one_line():
    for bad in (dict(size=8), dict(size=64.5), dict(views_per_body=0), dict(distance_range=(3.0, 1.0)), dict(fill=(0.9, 0.5)),
                dict(multi_person_share=1.5), dict(occluder_share=-0.1), dict(colour_jitter=-1.0), dict(population="kids"),
                dict(elevation_deg=(-95.0, 10.0))):  # fmt: skip
        with pytest.raises(BodycorrError):
            ImageConfig(**bad)


@pytest.mark.slow
def test_every_person_pixel_has_truth(plain, template):
    for v in plain.views_of_body(0) + plain.views_of_body(3):
        assert v.rgb.dtype == np.uint8 and v.rgb.shape == (48, 48, 3)
        m = v.mask
        assert m.sum() > 100 and set(np.unique(v.instance)) == {-1, 0}
        assert np.array_equal(m, v.template_vertex >= 0) and np.array_equal(m, v.template_face >= 0)
        assert np.array_equal(m, v.depth > 0)
        assert (template.mesh.faces[v.template_face[m]] == v.template_vertex[m][:, None]).any(1).all()
        assert np.allclose(v.template_bary[m].sum(1), 1, atol=1e-4)
        rows, cols = np.nonzero(m)
        assert max(np.ptp(rows), np.ptp(cols)) > 0.5 * PLAIN.size  # the person fills the crop
        # the person is drawn over the background: person and background pixels differ in colour
        assert np.abs(v.rgb[m].mean(0) - v.rgb[~m].mean(0)).max() > 3 or v.rgb[m].std() > 10
    assert v.identity == 1 and v.body == 3


@pytest.mark.slow
def test_same_seed_same_arrays_other_seed_differs():
    cfg = dataclasses.replace(PLAIN, multi_person_share=0.5, occluder_share=0.5, colour_jitter=1.0, upper_body_share=0.3)
    a = ImageViewGenerator(cfg, "train", seed=3).views_of_body(1)
    b = ImageViewGenerator(cfg, "train", seed=3).views_of_body(1)
    c = ImageViewGenerator(cfg, "train", seed=4).views_of_body(1)
    for x, y in zip(a, b):
        for k in ("rgb", "depth", "instance", "template_vertex", "template_face", "template_bary"):
            assert np.array_equal(getattr(x, k), getattr(y, k)), k
    assert not np.array_equal(a[0].rgb, c[0].rgb)
    assert not np.array_equal(a[0].rgb, a[1].rgb)


@pytest.mark.slow
def test_splits_never_share_a_person():
    gens = {s: ImageViewGenerator(PLAIN, s, seed=0) for s in ("train", "val", "test")}
    people = {s: {tuple(g.body(b)[1].round(6)) for b in range(0, 12, 2)} for s, g in gens.items()}
    assert not people["train"] & people["test"] and not people["train"] & people["val"] and not people["val"] & people["test"]
    # one person keeps one look across poses; different people look different
    g = gens["train"]
    assert g.appearance(0)[0] == g.appearance(0)[0] and g.appearance(0)[0] != g.appearance(1)[0]


@pytest.mark.slow
def test_crowd_frames_have_more_people_and_main_is_instance_0(template):
    gen = ImageViewGenerator(dataclasses.replace(PLAIN, size=64, multi_person_share=1.0, views_per_body=3), "val", seed=1)
    views = gen.views_of_body(0) + gen.views_of_body(5)
    counts = []
    for v in views:
        assert v.people in (2, 3)
        ids = set(np.unique(v.instance)) - {-1}
        assert 0 in ids and ids <= set(range(v.people))
        counts.append(len(ids))
        m = v.mask
        assert np.array_equal(m, v.template_vertex >= 0)  # truth for every person, not just the main one
        # the main person is the one framed: it covers the image centre region most
        sizes = [(v.instance == k).sum() for k in sorted(ids)]
        assert sizes[0] > 0.2 * max(sizes)
    assert np.mean(np.array(counts) > 1) >= 0.8


@pytest.mark.slow
def test_occluded_pixels_lose_their_truth():
    clean = ImageViewGenerator(PLAIN, "train", seed=2).views_of_body(4)
    hidden = ImageViewGenerator(dataclasses.replace(PLAIN, occluder_share=1.0), "train", seed=2).views_of_body(4)
    lost = 0
    for c, h in zip(clean, hidden):
        assert h.occluded and not c.occluded
        gone = c.mask & ~h.mask
        lost += gone.sum()
        assert (h.template_vertex[gone] == -1).all() and (h.depth[gone] == 0).all() and (h.instance[gone] == -1).all()
        assert h.mask.sum() > 0.5 * c.mask.sum() - 1  # occluders cover at most 40 % of the people
        # everything not occluded is unchanged (same camera, light, background, truth)
        keep = h.mask
        assert np.array_equal(h.template_vertex[keep], c.template_vertex[keep])
        assert np.array_equal(h.rgb[keep], c.rgb[keep])
        assert not (h.mask & ~c.mask).any()
    assert lost > 20


@pytest.mark.slow
def test_upper_body_crops_frame_head_and_torso(template):
    names = template.part_names
    legs = [names.index(p) for p in ("lower_leg.L", "lower_leg.R", "foot.L", "foot.R")]
    head = names.index("head")
    full = ImageViewGenerator(PLAIN, "train", seed=5).views_of_body(2)
    upper = ImageViewGenerator(dataclasses.replace(PLAIN, upper_body_share=1.0), "train", seed=5).views_of_body(2)

    def share(views, parts):
        v = np.concatenate([x.template_vertex[x.mask] for x in views])
        return np.isin(template.parts[v], parts).mean()

    assert all(v.upper_body for v in upper) and not any(v.upper_body for v in full)
    assert share(upper, [head]) > 1.5 * share(full, [head])
    assert share(upper, legs) < 0.5 * share(full, legs) + 0.01


@pytest.mark.slow
@pytest.mark.parametrize("motion", ["walk", "keys"])
def test_sequence_frames_change_smoothly(plain, template, motion):
    seq = plain.sequence(6, index=2, motion=motion)
    assert [v.body for v in seq] == list(range(6)) and all(v.identity == 2 for v in seq)
    assert all(v.camera.R.tobytes() == seq[0].camera.R.tobytes() for v in seq)
    pos = template.mesh.vertices
    for a, b in zip(seq[:-1], seq[1:]):
        both = a.mask & b.mask
        assert both.sum() > 0.8 * max(a.mask.sum(), b.mask.sum())
        step = np.linalg.norm(pos[a.template_vertex[both]] - pos[b.template_vertex[both]], axis=1)
        assert np.median(step) < 0.02 and np.percentile(step, 75) < 0.05
        bg = ~a.mask & ~b.mask
        assert np.array_equal(a.rgb[bg], b.rgb[bg])  # a static scene: same background every frame
    # against a different person in a different pose at the same pixels: far larger changes
    other = plain.views_of_body(1)[0]
    both = seq[0].mask & other.mask
    assert np.median(np.linalg.norm(pos[seq[0].template_vertex[both]] - pos[other.template_vertex[both]], axis=1)) > 0.05
    with pytest.raises(BodycorrError):
        plain.sequence(0)
    with pytest.raises(BodycorrError):
        plain.sequence(3, motion="dance")  # type: ignore[arg-type]


@pytest.mark.slow
def test_shards_deterministic_resumable_and_loadable(tmp_path):
    cfg = dataclasses.replace(PLAIN, size=32, multi_person_share=0.5, occluder_share=0.5, colour_jitter=1.0)
    a = generate_image_shards(cfg, "train", 3, 3, tmp_path / "a", shard_size=2, progress=False)
    b = generate_image_shards(cfg, "train", 3, 3, tmp_path / "b", shard_size=2, progress=False)
    pa, pb = sorted(a.glob("shard-*.npz")), sorted(b.glob("shard-*.npz"))
    assert len(pa) == 2 and [p.read_bytes() for p in pa] == [p.read_bytes() for p in pb]
    c = generate_image_shards(cfg, "train", 3, 4, tmp_path / "c", shard_size=2, progress=False)
    assert (c / shard_name(0)).read_bytes() != pa[0].read_bytes()
    # shards hold the same views the generator makes
    s = load_image_shard(pa[1])
    v = ImageViewGenerator(cfg, "train", seed=3).view(2)
    assert np.array_equal(s["rgb"][0], v.rgb) and np.array_equal(s["template_vertex"][0], v.template_vertex)
    # an interrupted run leaves a broken shard: the rerun remakes it and keeps the good ones
    kept = pa[0].stat().st_mtime_ns
    pa[1].write_bytes(pa[1].read_bytes()[:100])
    with pytest.raises(BodycorrError, match="corrupt"):
        load_image_shard(pa[1])
    generate_image_shards(cfg, "train", 3, 3, tmp_path / "a", shard_size=2, progress=False)
    assert pa[1].read_bytes() == pb[1].read_bytes() and pa[0].stat().st_mtime_ns == kept
    with pytest.raises(BodycorrError, match="other settings"):
        generate_image_shards(dataclasses.replace(cfg, size=48), "train", 3, 3, tmp_path / "a", shard_size=2, progress=False)
    ds = ImageShardDataset(a)
    assert len(ds) == 3
    item = ds[2]
    assert item["rgb"].shape == (3, 32, 32) and item["rgb"].dtype.is_floating_point
    assert 0.0 <= float(item["rgb"].min()) and float(item["rgb"].max()) <= 1.0
    assert item["template_vertex"].shape == (32, 32) and item["instance"].shape == (32, 32)
    assert ((item["template_vertex"] >= 0) == (item["instance"] >= 0)).all()
    with pytest.raises(BodycorrError, match="no shards"):
        ImageShardDataset(tmp_path / "nothing")


@pytest.mark.slow
def test_image_contact_sheet(plain, tmp_path):
    from bodycorr.data.preview import image_contact_sheet

    out = image_contact_sheet(plain.views_of_body(0) + plain.views_of_body(1), tmp_path / "sheet.png", columns=2)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
