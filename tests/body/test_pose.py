"""Pose sampling: ROM table, conversion to Anny, mirror, archetypes, determinism, coverage."""

from __future__ import annotations

import numpy as np
import pytest

from bodycorr.body import rom
from bodycorr.body.pose import (
    ARCHETYPES,
    Pose,
    PoseSampler,
    PoseSamplerConfig,
    archetype_angles,
    coverage_report,
    format_coverage,
)
from bodycorr.common.errors import BodycorrError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sampler(body_model):
    return PoseSampler(PoseSamplerConfig(), model=body_model)


@pytest.fixture(scope="module")
def upright(body_model):
    return PoseSampler(PoseSamplerConfig(yaw="none"), model=body_model)


def _posed(model, pose: Pose):
    return model(np.full((len(pose), 6), 0.5), pose.to_anny(model))


def test_rom_table_is_consistent():
    assert rom.ROM_RANGES.shape == (rom.NUM_ROM_JOINTS, 3, 2)
    assert (rom.ROM_RANGES[..., 0] <= rom.ROM_RANGES[..., 1]).all()
    for name in rom.ROM_JOINTS:
        if name.endswith(".L"):  # sides mirrored: same numbers
            r = rom.joint_index(name[:-2] + ".R")
            assert np.array_equal(rom.ROM_RANGES[rom.joint_index(name)], rom.ROM_RANGES[r])
    # Reaches the full human range where it matters.
    sh, hip, knee = (rom.ROM_RANGES[rom.joint_index(n)] for n in ("shoulder.L", "hip.L", "knee.L"))
    assert sh[0, 1] >= 170 and sh[1, 1] >= 170 and sh[0, 0] <= -45
    assert hip[0, 1] >= 120 and knee[0, 1] >= 145


def test_angles_round_trip(body_model, rng):
    frames = rom.get_rom_frames(body_model)
    lo, hi = rom.ROM_RANGES[..., 0], rom.ROM_RANGES[..., 1]
    a = rom.clip_to_rom(lo + rng.random((50,) + lo.shape) * (hi - lo))
    D = rom.angles_to_local(a, frames)
    back = rom.local_to_angles(D, frames)
    # Everywhere: the limbs end up the same (world rotation of the bones past the twist bones).
    sk = frames.skeleton
    G0, _ = sk.fk(D)
    G1, _ = sk.fk(rom.angles_to_local(back, frames))
    distal = [sk.index(f"{b}.{s}") for b in ("upperarm02", "lowerarm01", "wrist", "upperleg02", "foot") for s in "LR"]
    assert np.abs(G1[:, distal] - G0[:, distal]).max() < 1e-6
    # Away from the swing-twist singularity (a limb swung by 180°, where the twist is undefined):
    # the same angles.
    swing = np.hypot(a[:, :, 0], a[:, :, 1])
    ball = np.array([n.split(".")[0] in ("shoulder", "hip") for n in rom.ROM_JOINTS])
    regular = ~((swing > 170) & ball).any(1)
    assert regular.sum() > 10
    assert np.abs(back - a)[regular].max() < 1e-3


def test_signs_match_anatomy(body_model, upright):
    """Flexions go forward, abductions outward, as documented in rom.py (Anny faces -Y, left is +X)."""
    i = body_model.bone_index
    cases = {
        "shoulder.L": ((90, 0, 0), "wrist.L", np.array([0, -1, 0])),  # arm forward
        "hip.L": ((90, 0, 0), "foot.L", np.array([0, -1, 0])),  # leg forward
    }
    for joint, (ang, bone, direction) in cases.items():
        a = np.zeros((1, rom.NUM_ROM_JOINTS, 3))
        a[0, rom.joint_index(joint)] = ang
        h0 = _posed(body_model, Pose.rest(1)).bone_heads[0, i(bone)]
        h1 = _posed(body_model, Pose.from_angles(a)).bone_heads[0, i(bone)]
        assert (h1 - h0) @ direction > 0.2, joint
    a = np.zeros((3, rom.NUM_ROM_JOINTS, 3))
    a[0, rom.joint_index("shoulder.L")] = (0, 90, 0)  # left arm out to +X
    a[1, rom.joint_index("knee.L")] = (90, 0, 0)  # shin goes back (+Y)
    a[2, rom.joint_index("spine")] = (40, 0, 0)  # head goes forward (-Y)
    out = _posed(body_model, Pose.from_angles(a))
    rest = _posed(body_model, Pose.rest(1))
    assert out.bone_heads[0, i("wrist.L"), 0] > 0.6
    assert out.bone_heads[1, i("foot.L"), 1] - rest.bone_heads[0, i("foot.L"), 1] > 0.3
    assert out.bone_heads[2, i("head"), 1] - rest.bone_heads[0, i("head"), 1] < -0.2


def test_samples_within_rom_and_deterministic(sampler):
    p = sampler.sample(300, np.random.default_rng(1))
    assert len(p) == 300
    assert rom.within_rom(p.angles).all()
    q = sampler.sample(300, np.random.default_rng(1))
    assert np.array_equal(p.angles, q.angles) and np.array_equal(p.global_rotation, q.global_rotation)
    assert np.array_equal(p.translation, q.translation) and p.sources == q.sources
    r = sampler.sample(300, np.random.default_rng(2))
    assert not np.array_equal(p.angles, r.angles)
    # Global rotation: proper rotations, yaw spread over the circle.
    R = p.global_rotation
    assert np.allclose(R @ np.swapaxes(R, 1, 2), np.eye(3), atol=1e-9)
    yaw = np.arctan2(R[:, 1, 0], R[:, 0, 0])
    assert np.histogram(yaw, bins=8, range=(-np.pi, np.pi))[0].min() > 15
    # All three modes show up, and the stats add up.
    modes = {s.split(":")[0] for s in p.sources}
    assert modes == {"archetype", "interpolation", "independent"}
    st = sampler.stats
    assert st["accepted"] >= 900 and 0.0 < st["rejection_rate"] < 0.8
    assert set(st["per_mode"]) == {"archetype", "interpolation", "independent"}


def test_accepted_poses_pass_the_collision_test(sampler):
    p = sampler.sample(200, np.random.default_rng(4))
    ok, _ = sampler.evaluate(p)
    assert ok.all()


def test_mirror_maps_left_to_right(body_model, template):
    s = PoseSampler(PoseSamplerConfig(tilt_deg=10.0), model=body_model)
    p = s.sample(4, np.random.default_rng(3))
    q = p.mirror()
    assert np.allclose(q.mirror().angles, p.angles) and np.allclose(q.mirror().global_rotation, p.global_rotation)
    V = _posed(body_model, p).vertices[:, template.template_to_full]
    W = _posed(body_model, q).vertices[:, template.template_to_full]
    expect = V[:, template.symmetry] * np.array([-1.0, 1.0, 1.0])
    err = np.linalg.norm(W - expect, axis=-1)
    assert err.max() < 0.003  # the rest mesh itself is symmetric to 0.4 mm
    # A mirrored archetype is the same pose seen in a mirror: left hand on the head -> right hand.
    a = Pose.from_angles(archetype_angles("hand_on_head")[None])
    out = _posed(body_model, Pose.concatenate([a, a.mirror()]))
    i = body_model.bone_index
    assert out.bone_heads[0, i("wrist.L"), 2] > 0.5 > out.bone_heads[0, i("wrist.R"), 2]
    assert out.bone_heads[1, i("wrist.R"), 2] > 0.5 > out.bone_heads[1, i("wrist.L"), 2]


def test_archetypes_are_valid(upright):
    A = np.stack([archetype_angles(n) for n in ARCHETYPES])
    assert rom.within_rom(A).all()
    ok, worst = upright.evaluate(Pose.from_angles(A))
    bad = [n for n, o in zip(ARCHETYPES, ok) if not o]
    assert not bad, f"archetypes failing the collision test: {bad}"


def test_archetypes_do_what_they_claim(body_model, upright):
    names = ["arms_overhead", "hands_clasped_overhead", "hands_clasped_front", "hands_clasped_chest", "squat_deep",
             "sit_chair", "kneel_upright", "tree_pose", "forward_bend", "stand_relaxed"]  # fmt: skip
    p = upright.ground(Pose.from_angles(np.stack([archetype_angles(n) for n in names])))
    out = _posed(body_model, p)
    H = {n: out.bone_heads[k] for k, n in enumerate(names)}
    i = body_model.bone_index

    def z(n, b):
        return H[n][i(b), 2]

    def dist(n, a, b):
        return float(np.linalg.norm(H[n][i(a)] - H[n][i(b)]))

    for n in ("arms_overhead", "hands_clasped_overhead"):
        assert z(n, "wrist.L") > z(n, "head") + 0.15 and z(n, "wrist.R") > z(n, "head") + 0.15, n
    for n in ("hands_clasped_overhead", "hands_clasped_front", "hands_clasped_chest"):
        assert dist(n, "wrist.L", "wrist.R") < 0.12, n
    assert z("squat_deep", "upperleg01.L") < z("squat_deep", "lowerleg01.L") + 0.05  # hips at or below the knees
    assert abs(z("sit_chair", "upperleg01.L") - z("sit_chair", "lowerleg01.L")) < 0.08  # thighs level
    floor = out.vertices[names.index("stand_relaxed")][:, 2].min()
    assert z("kneel_upright", "lowerleg01.L") < floor + 0.08  # knees on the floor
    # Tree pose: the left foot against the right thigh, off the floor.
    assert dist("tree_pose", "foot.L", "lowerleg01.R") < 0.3 and z("tree_pose", "foot.L") > floor + 0.4
    assert H["tree_pose"][i("foot.L"), 0] < 0.08  # across to the right leg's side of the pelvis
    assert z("forward_bend", "head") < z("forward_bend", "spine05") + 0.1
    # Grounded: every pose stands on the rest pose's floor.
    assert np.abs(out.vertices[:, :, 2].min(1) - floor).max() < 0.04


def test_coverage_report(sampler):
    p = sampler.sample(1500, np.random.default_rng(5))
    rep = coverage_report(p)
    assert set(rep) == set(rom.ROM_JOINTS)
    for joint, axes in rep.items():
        for axis, r in axes.items():
            assert r["lo"] - 1e-6 <= r["min"] <= r["max"] <= r["hi"] + 1e-6
            assert r["coverage"] >= 0.8, (joint, axis, r)
    assert "shoulder.L" in format_coverage(rep)


def test_config_is_checked():
    with pytest.raises(BodycorrError):
        PoseSamplerConfig(mode_weights=(0, 0, 0))
    with pytest.raises(BodycorrError):
        PoseSamplerConfig(archetypes=("moonwalk",))
    with pytest.raises(BodycorrError):
        archetype_angles("moonwalk")


@pytest.mark.parametrize(
    "config", [PoseSamplerConfig(), PoseSamplerConfig(tilt_deg=10.0, grounding="none"), PoseSamplerConfig(collision="off")]
)
def test_batched_sampling_equals_one_generator_at_a_time(body_model, config):
    """sample_each (the engine's batched posing) draws exactly what sample does per generator."""
    one, many = PoseSampler(config, model=body_model), PoseSampler(config, model=body_model)
    for n in (1, 4):
        rngs = lambda: [np.random.default_rng([7, b]) for b in range(12)]  # noqa: E731
        a = Pose.concatenate([one.sample(n, r) for r in rngs()])
        gens = rngs()
        b = many.sample_each(gens, n)
        assert np.array_equal(a.angles, b.angles) and np.array_equal(a.global_rotation, b.global_rotation)
        assert np.array_equal(a.translation, b.translation) and a.sources == b.sources
        assert np.array_equal(a.to_anny(body_model), np.concatenate([b[i].to_anny(body_model) for i in range(len(b))]))
        assert one.stats == many.stats
        # every generator is left where sample() leaves it
        after = rngs()
        for r in after:
            PoseSampler(config, model=body_model).sample(n, r)
        assert [g.random() for g in gens] == [r.random() for r in after]
    assert len(many.sample_each([], 3)) == 0
