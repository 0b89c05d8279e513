import numpy as np
import pytest

from bodycorr.body.shape import sample_identity
from bodycorr.body.template import PART_NAMES

pytestmark = pytest.mark.slow


def test_template_is_the_body_component(template, body_model):
    assert template.num_vertices == 13348
    assert template.mesh.faces.max() < template.num_vertices
    # every Anny vertex maps to a template vertex; body vertices map to themselves
    assert template.full_to_template.shape == (body_model.num_vertices,)
    assert np.array_equal(template.full_to_template[template.template_to_full], np.arange(template.num_vertices))


def test_symmetry_is_an_involution_that_swaps_sides(template):
    v = template.mesh.vertices
    s = template.symmetry
    assert (s[s] == np.arange(len(s))).mean() > 0.99
    assert np.abs(v[s][:, 0] + v[:, 0]).max() < 0.005  # mirrored across x = 0
    # parts swap with their mirror part
    for i, name in enumerate(PART_NAMES):
        if name.endswith(".L"):
            mirror = PART_NAMES.index(name[:-2] + ".R")
            assert (template.parts[s[template.parts == i]] == mirror).mean() > 0.97


def test_33_landmarks_in_left_right_pairs(template):
    names = template.landmark_names
    assert len(names) == 33 == len(template.landmarks) == len(set(template.landmarks.tolist()))
    v = template.mesh.vertices
    for i, n in enumerate(names):
        if n.endswith(".L"):
            j = names.index(n[:-2] + ".R")
            assert v[template.landmarks[i], 0] > 0 > v[template.landmarks[j], 0]  # left is +x
            # the mirror of a left landmark is (close to) the right one
            assert np.linalg.norm(v[template.symmetry[template.landmarks[i]]] - v[template.landmarks[j]]) < 0.03
    top = template.landmarks[names.index("head_top")]
    assert v[top, 2] == pytest.approx(v[:, 2].max())


def test_uv_in_unit_square(template):
    assert template.uv.min() >= 0 and template.uv.max() <= 1
    assert template.face_uv.shape == (template.mesh.num_faces, 3, 2)


def test_map_full_points_reconstructs_surface_points(template, body_model, rng):
    """A point on the generated body maps to the template point with the same barycentrics."""
    faces = rng.integers(0, len(body_model.faces), 500)
    bary = rng.dirichlet(np.ones(3), 500).astype(np.float32)
    tf, tb, tv = template.map_full_points(faces, bary)
    rest = body_model(np.full((1, 6), 0.5)).vertices[0].astype(np.float64)
    body = template.full_face_to_template[faces] >= 0
    p_full = np.einsum("nk,nkd->nd", bary[body], rest[body_model.faces[faces[body]]])
    p_tmpl = template.mesh.surface_points(tf[body], tb[body])
    assert np.abs(p_full - p_tmpl).max() < 1e-5
    # eyes/tongue points land on a template face that contains their vertex
    assert (template.mesh.faces[tf] == tv[:, None]).any(1).all()


def test_identities_are_deterministic_and_split_disjoint():
    a = sample_identity("train", 3, seed=1).phenotypes
    assert np.array_equal(a, sample_identity("train", 3, seed=1).phenotypes)
    train = np.stack([sample_identity("train", i).phenotypes for i in range(300)])
    test = np.stack([sample_identity("test", i).phenotypes for i in range(300)])
    d = np.abs(train[:, None] - test[None]).max(-1)
    assert d.min() > 0
    assert train[:, 1].min() >= 0.42  # adults by default


def test_posing_is_batched_and_deterministic(body_model):
    ph = np.stack([sample_identity("train", i).phenotypes for i in range(3)])
    a = body_model(ph)
    b = body_model(ph)
    assert a.vertices.shape == (3, body_model.num_vertices, 3)
    assert np.array_equal(a.vertices, b.vertices)
    heights = np.ptp(a.vertices[:, :, 2], axis=1)
    assert ((heights > 1.3) & (heights < 2.2)).all()
