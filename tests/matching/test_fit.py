"""Template fitting from side-blind descriptor matches, and maps between scans through the fitted template."""

from __future__ import annotations

import numpy as np
import pytest

from bodycorr.body.articulated import PoseFitConfig
from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.mesh import Mesh
from bodycorr.geometry.nonrigid import NonRigidConfig
from bodycorr.matching.fit import FitConfig, fit_template, map_via_template
from tinyshapes import bend, mirrored_pair

FAST = FitConfig(nonrigid=NonRigidConfig(num_nodes=60))


def _side_blind_descriptors(rest: np.ndarray) -> np.ndarray:
    """Unit descriptors of the rest position with the side thrown away (|x|): left and right tie."""
    d = np.stack([np.abs(rest[:, 0]) * 4, rest[:, 1] * 4, rest[:, 2] * 2, np.ones(len(rest))], 1)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _scan(template: Mesh, angle: float, shift) -> np.ndarray:
    n = template.num_vertices // 2
    v = template.vertices.copy()
    v[:n] = bend(v[:n] - [0.3, 0, 0], angle) + [0.3, 0, 0]  # the left tube bends
    return v + np.asarray(shift)


def test_fit_recovers_the_scan_from_side_blind_matches():
    template, sym = mirrored_pair()
    desc = _side_blind_descriptors(template.vertices)
    scan = _scan(template, 50.0, [0.04, -0.03, 0.02])
    # the scan's points carry the descriptors of their rest positions: every match ties left and right
    fit = fit_template(scan, desc, None, template, desc, sym, target=Mesh(scan, template.faces, "scan"), config=FAST)
    err = np.linalg.norm(fit.vertices - scan, axis=1)
    assert err.mean() < 0.005 and err.max() < 0.05  # measured: 0.6 mm mean
    assert fit.starts_tried >= 1 and fit.matches > 100


@pytest.fixture(scope="module")
def two_fitted_scans():
    """Two bends of the tube pair and the template fitted onto each: (template, a, b, fit a, fit b)."""
    template, sym = mirrored_pair()
    desc = _side_blind_descriptors(template.vertices)
    a, b = _scan(template, 40.0, [0, 0, 0]), _scan(template, -30.0, [0.05, 0, 0])
    fa = fit_template(a, desc, None, template, desc, sym, target=Mesh(a, template.faces, "a"), config=FAST)
    fb = fit_template(b, desc, None, template, desc, sym, target=Mesh(b, template.faces, "b"), config=FAST)
    return template, a, b, fa, fb


def test_map_via_template_between_two_scans(two_fitted_scans):
    template, a, b, fa, fb = two_fitted_scans
    m, d = map_via_template(a, fa, b, fb)
    assert d.shape == m.shape and np.median(d) < 0.01  # the target's fit lands on its own points
    # the truth is vertex i -> vertex i (same topology): errors in metres on the rest shape
    err = np.linalg.norm(template.vertices[m] - template.vertices, axis=1)
    assert np.median(err) < 0.03 and (err > 0.2).mean() < 0.02  # no vertex lands on the other tube


def test_body_fit_needs_the_anny_template():
    template, sym = mirrored_pair()
    desc = _side_blind_descriptors(template.vertices)
    with pytest.raises(BodycorrError, match="needs its Template"):
        fit_template(template.vertices, desc, None, template, desc, sym, config=FitConfig(model="body"))


@pytest.mark.parametrize("model", ["body", "body+graph"])
def test_body_fit_recovers_a_posed_person_from_side_blind_matches(template, body_model, model):
    from bodycorr.body.pose import Pose, archetype_angles

    pose = Pose.from_angles(archetype_angles("walk_passing") + archetype_angles("wave"))
    ph = np.array([[0.3, 0.6, 0.5, 0.6, 0.4, 0.5]])
    scan = body_model(ph, pose.to_anny(body_model)).vertices[0][template.template_to_full].astype(np.float64)
    rest = template.mesh.vertices
    desc = _side_blind_descriptors(rest - rest.mean(0))
    cfg = FitConfig(model=model, nonrigid=NonRigidConfig(num_nodes=150), pose=PoseFitConfig(iterations=80))
    fit = fit_template(scan, desc, None, template.mesh, desc, template.symmetry, target=Mesh(scan, template.mesh.faces, "scan"),
                       config=cfg, body=template)  # fmt: skip
    err = np.linalg.norm(fit.vertices - scan, axis=1)
    mirrored = np.linalg.norm(fit.vertices[template.symmetry] - scan, axis=1)
    # side-blind descriptors: the fit may come out as the person or as their mirror image
    assert min(err.mean(), mirrored.mean()) < 0.03



def test_template_matches_spread_over_the_scan():
    # 3000 very confident matches packed in a 1 cm blob (a mesh's hand: many vertices per cm²) and
    # 1000 less confident ones over a 1 m body: the 500 kept must cover the body, not the blob.
    from bodycorr.matching.fit import template_matches

    rng = np.random.default_rng(0)
    tdesc = rng.normal(size=(400, 16)).astype(np.float32)
    blob_v, body_v = rng.integers(0, 100, 3000), rng.integers(100, 400, 1000)
    desc = np.r_[tdesc[blob_v] + 0.001 * rng.normal(size=(3000, 16)), tdesc[body_v] + 0.3 * rng.normal(size=(1000, 16))]
    points = np.r_[rng.uniform(0, 0.01, (3000, 3)), rng.uniform(0, 1, (1000, 3))]
    cfg = FitConfig(max_matches=500, min_confidence=0.0)
    si, tp, w = template_matches(points, desc.astype(np.float32), None, tdesc, cfg, np.random.default_rng(0))
    assert len(si) == 500
    body = si >= 100
    assert body.sum() >= 400, body.sum()
    assert np.all(np.isin(si[body], body_v))  # the body's matches are its own
    assert 1 <= (~body).sum() <= 20  # the blob still gets its most confident few


def test_template_matches_round_trip_drops_doubtful_matches():
    """Two far-apart scan points have almost the same descriptor, so both match one template vertex whose
    nearest scan point is the first: with ``round_trip_m`` the second (a 1 m round trip) loses its
    confidence and is dropped; without it, both are kept with the same confidence."""
    from bodycorr.matching.fit import template_matches

    rng = np.random.default_rng(0)
    tdesc = rng.normal(size=(50, 16)).astype(np.float32)
    tdesc /= np.linalg.norm(tdesc, axis=1, keepdims=True)
    near0 = tdesc[0] + 0.01 * rng.normal(size=16).astype(np.float32)
    desc = np.r_[tdesc[:10], near0[None] / np.linalg.norm(near0)]  # point 10 looks like point 0 ...
    points = np.r_[rng.uniform(0, 0.3, (10, 3)), [[0.0, 0.0, 1.3]]]  # ... a metre away
    plain = template_matches(points, desc, None, tdesc, FitConfig(min_confidence=0.05), np.random.default_rng(0))
    assert len(plain[0]) == 11 and np.allclose(plain[2], 1.0, atol=0.01)
    si, tp, w = template_matches(points, desc, None, tdesc, FitConfig(min_confidence=0.05, round_trip_m=0.05), np.random.default_rng(0))
    assert len(si) == 10 and not np.any(np.all(tp == points[10], axis=1))
    assert np.allclose(w, 1.0)  # mutual matches keep their full confidence


def test_map_via_template_through_the_surface_is_at_least_as_tight(two_fitted_scans):
    template, a, b, fa, fb = two_fitted_scans
    # points between the vertices (face centres of a): the closest surface place carries them, the nearest vertex snaps them
    q = a[template.faces].mean(1)
    truth = b[template.faces].mean(1)
    by_vertex, _ = map_via_template(q, fa, truth, fb)
    by_surface, _ = map_via_template(q, fa, truth, fb, template.faces)
    hit = lambda m: (m == np.arange(len(q))).mean()  # noqa: E731  (each face centre should find its own face centre)
    assert hit(by_surface) > 0.9 and hit(by_surface) > hit(by_vertex) + 0.2


@pytest.fixture(scope="module")
def raised_arms(body_model, template):
    """Anny of another shape with the arms raised and turned: (Vt, 3) in the template's topology."""
    from bodycorr.body.pose import Pose, archetype_angles

    pose = Pose.from_angles(archetype_angles("arms_overhead"), translation=np.array([[0.2, -0.1, 0.0]]))
    ph = np.array([[0.7, 0.5, 0.6, 0.4, 0.6, 0.5]])
    return body_model(ph, pose.to_anny(body_model)).vertices[0][template.template_to_full].astype(np.float64)


def test_body_fit_from_a_map_recovers_a_region_the_map_got_wrong_with_the_descriptors(template, raised_arms):
    from scipy.spatial import cKDTree

    from bodycorr.matching.fit import fit_body_to_map

    rest, parts = template.mesh.vertices, template.parts
    arm = np.isin(parts, [template.part_names.index(p) for p in ("upper_arm.L", "lower_arm.L", "hand.L")])
    u = np.arange(template.num_vertices)
    # the map sends the whole left arm onto the torso (an arm held against the body, mapped spectrally)
    torso_idx = np.flatnonzero(parts == template.part_names.index("torso"))
    u[arm] = torso_idx[cKDTree(rest[torso_idx]).query(rest[arm])[1]]
    desc = np.c_[rest * 3, np.ones(len(rest))]  # side-aware descriptors: each point's rest position
    cfg = PoseFitConfig(iterations=80)
    small = dict(max_matches=1500, descriptor_matches=800, starts=1)
    alone = fit_body_to_map(raised_arms, u, template, cfg, **small)
    helped = fit_body_to_map(raised_arms, u, template, cfg, desc, None, desc, **small)
    err = lambda f: np.linalg.norm(f.vertices - raised_arms, axis=1)  # noqa: E731
    assert err(helped)[~arm].mean() < 0.02  # the rest of the body follows the map
    assert err(helped)[arm].mean() < 0.04 and err(alone)[arm].mean() > 2 * err(helped)[arm].mean()  # measured: 2.9 and 8.0 cm
    assert helped.body is not None and helped.matches > alone.matches
    with pytest.raises(BodycorrError, match="template_vertex"):
        fit_body_to_map(raised_arms, u[:10], template, cfg)
