"""Texture transfer through the template and UV texture export, on hand-made correspondence maps."""

from __future__ import annotations

import numpy as np
import pytest

from bodycorr.apps.transfer import paint, texture_from_image, uv_texture
from bodycorr.body.template import get_template
from bodycorr.common.errors import BodycorrError
from bodycorr.matching.image import ImageCorrespondence


def _corr(faces: np.ndarray, bary: np.ndarray, hw: tuple[int, int]) -> ImageCorrespondence:
    h, w = hw
    n = h * w
    sil = np.zeros(n, bool)
    sil[: len(faces)] = True
    face = -np.ones(n, np.int64)
    face[: len(faces)] = faces
    b = np.zeros((n, 3), np.float32)
    b[: len(faces)] = bary
    return ImageCorrespondence(
        silhouette=sil.reshape(h, w), vertex=-np.ones((h, w), np.int64), face=face.reshape(h, w), bary=b.reshape(h, w, 3),
        uv=np.full((h, w, 2), np.nan, np.float32), colour=np.zeros((h, w, 3), np.float32),
        confidence=sil.reshape(h, w).astype(np.float32), silhouette_prob=sil.reshape(h, w).astype(np.float32),
    )  # fmt: skip


def _position_colour(points: np.ndarray, t) -> np.ndarray:
    lo, hi = t.mesh.vertices.min(0), t.mesh.vertices.max(0)
    return (points - lo) / (hi - lo)


@pytest.fixture(scope="module")
def template():
    return get_template()


def test_texture_recovers_a_smooth_colouring_and_paints_it_back(template):
    rng = np.random.default_rng(0)
    nf = len(template.mesh.faces)
    # image A sees every face a few times; its pixel colour is a smooth function of the template point
    faces = np.tile(np.arange(nf), 3)
    bary = rng.dirichlet(np.ones(3), len(faces)).astype(np.float32)
    side = int(np.ceil(np.sqrt(len(faces))))
    corr_a = _corr(faces, bary, (side, side))
    pts = (template.mesh.vertices[template.mesh.faces[faces]] * bary[..., None]).sum(1)
    rgb_a = np.zeros((side * side, 3), np.uint8)
    rgb_a[: len(faces)] = (_position_colour(pts, template) * 255 + 0.5).astype(np.uint8)
    tex = texture_from_image(rgb_a.reshape(side, side, 3), corr_a, template)
    truth = _position_colour(template.mesh.vertices, template)
    assert np.abs(tex.colours - truth).mean() < 0.02
    # B shows other points; painting without shading gives their colours
    fb = rng.integers(0, nf, 500)
    bb = rng.dirichlet(np.ones(3), 500).astype(np.float32)
    corr_b = _corr(fb, bb, (25, 20))
    out = paint(np.zeros((25, 20, 3), np.uint8), corr_b, tex, template, keep_shading=False).reshape(-1, 3)[:500] / 255
    want = _position_colour((template.mesh.vertices[template.mesh.faces[fb]] * bb[..., None]).sum(1), template)
    assert np.abs(out - want).mean() < 0.03


def test_unseen_vertices_are_filled_from_their_neighbours(template):
    # only faces on the left half are seen, all red; the rest must be filled red too, not black
    left = np.flatnonzero(template.mesh.vertices[template.mesh.faces].mean(1)[:, 0] > 0)
    corr = _corr(left, np.full((len(left), 3), 1 / 3, np.float32), (1, len(left)))
    rgb = np.zeros((1, len(left), 3), np.uint8)
    rgb[..., 0] = 255
    tex = texture_from_image(rgb, corr, template)
    assert (tex.observed > 0).mean() < 0.8
    np.testing.assert_allclose(tex.colours, np.tile([1.0, 0.0, 0.0], (template.num_vertices, 1)), atol=1e-5)


def test_uv_texture_covers_the_atlas_with_the_vertex_colours(template):
    from bodycorr.apps.transfer import VertexTexture

    tex = VertexTexture(colours=np.tile(np.array([[0.2, 0.6, 1.0]], np.float32), (template.num_vertices, 1)),
                        observed=np.ones(template.num_vertices, np.float32))  # fmt: skip
    img = uv_texture(tex, 64, template)
    covered = img.sum(-1) > 0
    assert img.shape == (64, 64, 3) and 0.2 < covered.mean() < 1.0
    np.testing.assert_allclose(img[covered].mean(0), [51, 153, 255], atol=1)


def test_size_mismatch_is_one_line(template):
    corr = _corr(np.arange(4), np.full((4, 3), 1 / 3, np.float32), (2, 2))
    with pytest.raises(BodycorrError, match="differ in size"):
        texture_from_image(np.zeros((3, 3, 3), np.uint8), corr, template)


def test_transfer_reads_big_photos_at_the_bounded_size(tmp_path, monkeypatch):
    """transfer reads both photos as image does: a 3000x2000 one at 2048x1365 (memory bounded)."""
    from PIL import Image

    import bodycorr.matching.image as mi
    from bodycorr.apps import transfer

    seen = []

    def mapper(model=None, device="cpu"):
        def run(rgb):
            seen.append(rgb.shape)
            raise BodycorrError("stop here")
        return run

    monkeypatch.setattr(mi, "load_mapper", mapper)
    big = np.zeros((2000, 3000, 3), np.uint8)
    Image.fromarray(big).save(tmp_path / "a.png", compress_level=1)
    Image.fromarray(big[:100, :150]).save(tmp_path / "b.png")
    with pytest.raises(BodycorrError, match="stop here"):
        transfer.run_transfer(str(tmp_path / "a.png"), str(tmp_path / "b.png"), str(tmp_path / "out"))
    assert seen == [(1365, 2048, 3)]


def test_side_by_side_labels_every_panel(template, tmp_path, saved_figures):
    """side_by_side.png: A, B, the result, and A's appearance on the template front, back and in UV, each titled."""
    from bodycorr.apps.transfer import VertexTexture, _write_transfer

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 255, (30, 20, 3), dtype=np.uint8), rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    result = b.copy()
    corr_a = _corr(np.arange(10), np.full((10, 3), 1 / 3, np.float32), (30, 20))
    corr_b = _corr(np.arange(5), np.full((5, 3), 1 / 3, np.float32), (24, 32))
    n = template.num_vertices
    colours = np.where((template.mesh.vertices[:, 0] > 0)[:, None], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]).astype(np.float32)
    tex = VertexTexture(colours=colours, observed=(np.arange(n) % 4 == 0).astype(np.float32))
    summary = _write_transfer(tmp_path, "dir/a.png", "dir/b.png", a, b, corr_a, corr_b, tex, result, 32)
    assert summary["texture_coverage"] == pytest.approx(0.25, abs=0.01)
    assert (tmp_path / "side_by_side.png").is_file() and (tmp_path / "texture.png").is_file()
    (fig,) = saved_figures
    titles = [ax.get_title().replace("\n", " ") for ax in fig.axes]
    assert len(titles) == 6
    assert titles[0] == "A: source photo (a.png) (the appearance)" and titles[1] == "B: target photo (b.png) (the pose and shape)"
    assert titles[2].startswith("B repainted with A's appearance")
    assert titles[3].startswith("A's appearance on the template: front") and titles[4].startswith("A's appearance on the template: back")
    assert "25 % seen in A" in titles[3] and titles[5].startswith("A's appearance in the template's UV atlas")
    for ax, img in zip(fig.axes[:3], (a, b, result)):
        np.testing.assert_array_equal(ax.images[0].get_array(), img)
    # the template panels wear A's colours: seen from the front, the body's left (+x, red) is on the picture's right
    front = fig.axes[3].collections[0]
    paths = front.get_paths()
    right = np.array([p.vertices[:, 0].mean() > 0 for p in paths])
    fc = front.get_facecolor()[:, :3]
    assert (fc[right, 0] > fc[right, 2]).mean() > 0.95 and (fc[~right, 2] > fc[~right, 0]).mean() > 0.95
