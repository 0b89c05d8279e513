"""Fitting Anny's pose and shape to matched points: recovers known bodies, picks the right start, reads side flips."""

from __future__ import annotations

import numpy as np
import pytest

from bodycorr.body.articulated import FIT_BONES, PoseFitConfig, fit_pose
from bodycorr.body.pose import Pose, archetype_angles
from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.rigid import SimilarityTransform, robust_procrustes


def _yaw(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


@pytest.fixture(scope="module")
def posed(body_model, template):
    """A body of another shape in a pose far from the A-pose rest (arms overhead, a knee bent),
    turned 60° and moved: (its template vertices, the true rigid part)."""
    ang = archetype_angles("arms_overhead")
    ang += archetype_angles("walk_passing") * 0.8
    pose = Pose.from_angles(ang, global_rotation=_yaw(60)[None], translation=np.array([[0.3, -0.2, 0.1]]))
    ph = np.array([[0.8, 0.5, 0.6, 0.3, 0.7, 0.5]])
    v = body_model(ph, pose.to_anny(body_model)).vertices[0][template.template_to_full].astype(np.float64)
    return v


def _start(template, v, si):
    return robust_procrustes(template.mesh.vertices[si], v[si], np.ones(len(si)))[0]


def test_recovers_a_posed_body_of_another_shape_from_exact_matches(body_model, template, posed):
    rng = np.random.default_rng(0)
    si = rng.choice(template.num_vertices, 1500, replace=False)
    rest_err = np.linalg.norm(_start(template, posed, si).apply(template.mesh.vertices) - posed, axis=1).mean()
    fit = fit_pose(template, si, posed[si], np.ones(len(si)), _start(template, posed, si), scan=posed)
    err = np.linalg.norm(fit.vertices - posed, axis=1)
    assert rest_err > 0.10  # the rest template, rigidly placed, is far off
    assert err.mean() < 0.02 and np.median(err) < 0.015
    assert fit.pose.shape == (body_model.num_bones, 4, 4)
    assert np.allclose(fit.rotation @ fit.rotation.T, np.eye(3), atol=1e-5)
    assert fit.phenotypes.shape == (6,) and np.all((fit.phenotypes >= 0) & (fit.phenotypes <= 1))


def test_skinning_a_few_vertices_equals_the_full_forward_pass(body_model):
    """The fast path (blend shapes once, skin only the asked vertices) against Anny's own forward."""
    import torch

    ph = np.array([0.8, 0.3, 0.6, 0.7, 0.4, 0.5])
    rest = body_model.rest_body(ph)
    g = torch.Generator().manual_seed(0)
    pose = torch.eye(4).expand(2, body_model.num_bones, 4, 4).clone()
    import roma

    pose[:, 1:, :3, :3] = roma.rotvec_to_rotmat(0.3 * torch.randn(2, body_model.num_bones - 1, 3, generator=g))
    ids = torch.as_tensor(np.random.default_rng(0).choice(body_model.num_vertices, 500, replace=False))
    ref = body_model.forward_torch(pose, torch.as_tensor(ph, dtype=torch.float32).expand(2, -1))
    fast = body_model.skin(pose, rest, ids)
    assert fast.shape == (2, 500, 3)
    assert (ref[:, ids] - fast).abs().max() < 1e-4
    assert (ref - body_model.skin(pose, rest)).abs().max() < 1e-4
    assert (ref[0] - ref[1]).abs().max() > 0.05  # the two poses differ: the comparison is not trivial


def test_a_fixed_shape_fit_recovers_the_pose(body_model, template, posed):
    """With the person's shape given (tracking), only bones move, through the fast skinning path."""
    rng = np.random.default_rng(3)
    si = rng.choice(template.num_vertices, 1500, replace=False)
    ph = np.array([0.8, 0.5, 0.6, 0.3, 0.7, 0.5])  # the fixture's shape
    cfg = PoseFitConfig(shape=False)
    fit = fit_pose(template, si, posed[si], np.ones(len(si)), _start(template, posed, si), scan=posed, config=cfg, phenotypes=ph)
    assert np.linalg.norm(fit.vertices - posed, axis=1).mean() < 0.015
    np.testing.assert_allclose(fit.phenotypes, ph, atol=1e-6)
    neutral = fit_pose(template, si, posed[si], np.ones(len(si)), _start(template, posed, si), scan=posed, config=cfg)
    np.testing.assert_allclose(neutral.phenotypes, 0.5)
    with pytest.raises(BodycorrError, match="phenotypes must be 6 values"):
        fit_pose(template, si, posed[si], np.ones(len(si)), _start(template, posed, si), config=cfg, phenotypes=[0.5, 2.0])


def test_keeps_the_right_start_of_two(template, posed):
    rng = np.random.default_rng(1)
    si = rng.choice(template.num_vertices, 1000, replace=False)
    good = _start(template, posed, si)
    c = posed[si].mean(0)
    turned = SimilarityTransform(_yaw(180) @ good.rotation, _yaw(180) @ (good.translation - c) + c)
    fit = fit_pose(template, si, posed[si], np.ones(len(si)), [turned, good], config=PoseFitConfig(iterations=80))
    assert fit.start == 1
    assert fit.start_energies.shape == (2,) and fit.start_energies[1] < fit.start_energies[0]
    assert np.linalg.norm(fit.vertices - posed, axis=1).mean() < 0.03


def _turned_case(template, posed):
    """1,500 matches, 80 % naming the mirror vertex, and two rigid starts: the right one and one
    turned half-way round about the vertical. -> (si, labels, good, turned)."""
    rng = np.random.default_rng(4)
    si = rng.choice(template.num_vertices, 1500, replace=False)
    labels = np.where(rng.random(len(si)) < 0.8, template.symmetry[si], si)
    good = _start(template, posed, si)
    c = posed[si].mean(0)
    return si, labels, good, SimilarityTransform(_yaw(180) @ good.rotation, _yaw(180) @ (good.translation - c) + c)


@pytest.mark.parametrize("select", ["coverage", "residual", "combined"])
def test_distance_to_the_scan_keeps_the_start_whose_body_lies_on_it(template, posed, select):
    """With 80 % of the matches naming the mirror vertex, the start turned half-way round leaves
    the fitted body off the scan: coverage (mean body-to-scan distance, metres) and residual
    (scan-to-body) keep the right one. (On real descriptors the turned start can win on energy;
    see PoseFitConfig.select.)"""
    si, labels, good, turned = _turned_case(template, posed)
    cfg = PoseFitConfig(iterations=100, select=select)
    fit = fit_pose(template, labels, posed[si], np.ones(len(si)), [turned, good], alternatives=template.symmetry[labels], scan=posed, config=cfg)
    assert fit.start == 1 and np.linalg.norm(fit.vertices - posed, axis=1).mean() < 0.03
    score = fit.start_energies.reshape(2, len(cfg.coverage_penalties)).min(1)  # each start under each penalty
    assert score[0] > 2 * score[1]
    if select != "combined":  # a distance in metres
        assert score[1] < 0.015
    with pytest.raises(BodycorrError, match="pass scan="):
        fit_pose(template, si, posed[si], np.ones(len(si)), good, config=PoseFitConfig(select=select))


def test_candidates_are_reported_and_the_energy_guard_restricts_the_choice(template, posed):
    """Every finished candidate comes back with its scores; the kept one is the rule's; with the
    guard at 1x the lowest energy only the lowest-energy candidate may be kept."""
    from dataclasses import replace

    si, labels, good, turned = _turned_case(template, posed)
    cfg = PoseFitConfig(iterations=60, select="residual")
    args = (template, labels, posed[si], np.ones(len(si)), [turned, good])
    fit = fit_pose(*args, alternatives=template.symmetry[labels], scan=posed, config=cfg)
    cand, b = fit.candidates, 2 * len(cfg.coverage_penalties)
    assert cand.vertices.shape == (b, template.num_vertices, 3) and cand.energy.shape == cand.residual.shape == (b,)
    assert cand.start.tolist() == [0, 0, 1, 1] and np.allclose(cand.penalty, list(cfg.coverage_penalties) * 2)
    assert np.allclose(cand.vertices[np.argmin(cand.residual)], fit.vertices, atol=1e-5)
    assert np.allclose(cand.residual, fit.start_energies)
    assert cand.energy[cand.start == 0].min() > cand.energy[cand.start == 1].min()  # the turned start: matches disagree
    guarded = fit_pose(*args, alternatives=template.symmetry[labels], scan=posed, config=replace(cfg, select_energy_ratio=1.0))
    assert np.allclose(guarded.vertices, guarded.candidates.vertices[np.argmin(guarded.candidates.energy)], atol=1e-5)
    # one start: nothing to compare, no candidates
    assert fit_pose(template, si, posed[si], np.ones(len(si)), good, scan=posed, config=replace(cfg, iterations=20)).candidates is None


def test_tightening_pulls_the_kept_candidate_onto_the_scan(template, posed):
    """The extra steps on the kept candidate alone bring it nearer the scan; the choice among the
    candidates is made before them (the same candidates and scores with and without)."""
    from dataclasses import replace

    from bodycorr.body.articulated import _mean_distance

    rng = np.random.default_rng(5)
    si = rng.choice(template.num_vertices, 800, replace=False)
    noisy = posed[si] + rng.normal(scale=0.03, size=(len(si), 3))  # matches 3 cm off: the fit sits off the surface
    cfg = PoseFitConfig(iterations=60, select="residual")
    args = (template, si, noisy, np.ones(len(si)), _start(template, posed, si))
    plain = fit_pose(*args, alternatives=template.symmetry[si], scan=posed, config=cfg)
    tight = fit_pose(*args, alternatives=template.symmetry[si], scan=posed, config=replace(cfg, tighten_steps=60))
    assert np.allclose(plain.candidates.residual, tight.candidates.residual) and np.allclose(plain.start_energies, tight.start_energies)
    before, after = _mean_distance(posed, plain.vertices), _mean_distance(posed, tight.vertices)
    assert after < 0.9 * before, (before, after)
    assert np.linalg.norm(tight.vertices - posed, axis=1).mean() < np.linalg.norm(plain.vertices - posed, axis=1).mean()


def test_a_limb_matched_to_the_wrong_side_is_read_through_its_mirror(template, posed):
    rng = np.random.default_rng(2)
    si = rng.choice(template.num_vertices, 1500, replace=False)
    flipped = si.copy()
    arm = np.isin(template.parts[si], [template.part_names.index(p) for p in ("upper_arm.L", "lower_arm.L", "hand.L")])
    flipped[arm] = template.symmetry[si[arm]]  # the left arm's points claim to be the right arm
    start = _start(template, posed, si)
    cfg = PoseFitConfig(iterations=100)
    aware = fit_pose(template, flipped, posed[si], np.ones(len(si)), start, alternatives=template.symmetry[flipped], config=cfg)
    blind = fit_pose(template, flipped, posed[si], np.ones(len(si)), start, config=cfg)
    left_arm = np.isin(template.parts, [template.part_names.index(p) for p in ("upper_arm.L", "lower_arm.L")])
    err_aware = np.linalg.norm(aware.vertices - posed, axis=1)[left_arm].mean()
    err_blind = np.linalg.norm(blind.vertices - posed, axis=1)[left_arm].mean()
    assert err_aware < 0.05 and err_blind > 2 * err_aware


def test_free_space_moves_the_body_out_of_what_the_camera_saw_through(template, posed):
    """No matches on the arms and a camera on the body's left: the rest pose's left arm, stuck out
    sideways, floats in front of the measured chest until the free-space term moves it."""
    from bodycorr.geometry.camera import Camera, Intrinsics
    from bodycorr.geometry.silhouette import DepthSilhouette
    from bodycorr.render.frame import render
    from bodycorr.render.raycast import RayCaster

    c = posed.mean(0)
    side = _yaw(60) @ np.array([1.0, 0.0, 0.0])  # the body's left-right axis after its 60° turn
    cam = Camera.look_at(c + 3.0 * side, c, up=(0.0, 0.0, 1.0), intrinsics=Intrinsics.square(128, fov_deg=50.0))
    depth = render(RayCaster(posed, template.mesh.faces), cam).depth
    sil = DepthSilhouette.from_depth(np.nan_to_num(depth), cam)
    arm_parts = [template.part_names.index(p) for p in template.part_names if "arm" in p or "hand" in p]
    rng = np.random.default_rng(0)
    body = np.flatnonzero(~np.isin(template.parts, arm_parts))
    si = rng.choice(body, 1500, replace=False)
    fits = {}
    for fs in (0.0, 10.0):
        cfg = PoseFitConfig(iterations=100, shape=False, free_space=fs, silhouette=0.0)
        fits[fs] = fit_pose(template, si, posed[si], np.ones(len(si)), _start(template, posed, si), config=cfg,
                            phenotypes=np.array([0.8, 0.5, 0.6, 0.3, 0.7, 0.5]), silhouette=sil)  # fmt: skip
    in_front = {fs: (sil.residuals(f.vertices, tolerance=0.02).in_front > 0).sum() for fs, f in fits.items()}
    assert in_front[0.0] > 200 and in_front[10.0] < in_front[0.0] / 2, in_front
    err = np.linalg.norm(fits[10.0].vertices - posed, axis=1)[body].mean()
    assert err < 0.02, err  # the matched body is not pushed off its matches
    # the free-space term on from the start and from half-way: both fitted, the lower energy kept
    paths = fits[10.0].start_energies
    assert paths.shape == (2,) and fits[10.0].energy == pytest.approx(paths.min(), rel=1e-5)


def test_bad_input_is_one_clear_error(template):
    v = template.mesh.vertices
    with pytest.raises(BodycorrError, match="3 finite matches"):
        fit_pose(template, [0, 1], v[:2], np.ones(2), SimilarityTransform.identity())
    with pytest.raises(BodycorrError, match="must lie in"):
        fit_pose(template, [0, 1, 10**7], v[:3], np.ones(3), SimilarityTransform.identity())
    with pytest.raises(BodycorrError, match="free_space_from"):
        fit_pose(template, [0, 1, 2], v[:3], np.ones(3), SimilarityTransform.identity(), config=PoseFitConfig(free_space_from=(1.5,)))
    with pytest.raises(BodycorrError, match="no rigid start"):
        fit_pose(template, [0, 1, 2], v[:3], np.ones(3), [])
    bad = v[:3].copy()
    bad[0, 0] = np.nan
    with pytest.raises(BodycorrError, match="finite"):
        fit_pose(template, [0, 1, 2], bad, np.ones(3), SimilarityTransform.identity())


def test_fit_bones_are_anny_bones(body_model):
    assert all(b in body_model.bone_labels for b in FIT_BONES)
    assert len(set(FIT_BONES)) == len(FIT_BONES)


def test_front_facing_closest_points_recover_a_body_seen_from_one_side(template, posed):
    """500 matches and one depth frame: with the closest points sought only among the vertices
    facing the camera, the fit lands on the body as well as with all vertices (its gain on noisy
    learned matches is measured on tracking walks; see PoseFitConfig.closest_point_facing)."""
    from bodycorr.geometry.camera import Camera, Intrinsics
    from bodycorr.geometry.silhouette import DepthSilhouette
    from bodycorr.render.frame import render
    from bodycorr.render.raycast import RayCaster

    c = posed.mean(0)
    front = _yaw(60) @ np.array([0.0, -1.0, 0.0])  # the body faces -Y before its 60° turn
    cam = Camera.look_at(c + 2.5 * front, c, up=(0.0, 0.0, 1.0), intrinsics=Intrinsics.square(128, fov_deg=50.0))
    depth = np.nan_to_num(render(RayCaster(posed, template.mesh.faces), cam).depth)
    sil = DepthSilhouette.from_depth(depth, cam)
    scan = cam.backproject(depth)[depth > 0]
    si = np.random.default_rng(7).choice(template.num_vertices, 500, replace=False)
    ph = np.array([0.8, 0.5, 0.6, 0.3, 0.7, 0.5])
    err = {}
    for facing in (False, True):
        cfg = PoseFitConfig(iterations=100, shape=False, closest_point=2.0, closest_point_facing=facing)
        fit = fit_pose(template, si, posed[si], np.ones(len(si)), _start(template, posed, si), scan=scan, config=cfg, phenotypes=ph, silhouette=sil)
        err[facing] = np.linalg.norm(fit.vertices - posed, axis=1).mean()
    assert len(scan) > 1000
    assert err[True] < 0.02 and err[True] < 1.2 * err[False], err
