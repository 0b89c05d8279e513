"""Motion: velocity-limited key-pose sequences and Anny's walk cycle."""

from __future__ import annotations

import numpy as np
import pytest

from bodycorr.body import motion, rom
from bodycorr.body.pose import PoseSampler, PoseSamplerConfig

pytestmark = pytest.mark.slow

FPS = 30.0
VMAX = 120.0


@pytest.fixture(scope="module")
def sampler(body_model):
    return PoseSampler(PoseSamplerConfig(), model=body_model)


@pytest.fixture(scope="module")
def sequence(sampler):
    return motion.key_pose_sequence(sampler, 240, FPS, VMAX, np.random.default_rng(0))


def test_sequence_respects_velocity_limit(sequence):
    assert len(sequence) == 240
    v = motion.angular_velocity_deg_s(sequence, FPS)
    assert np.abs(v).max() <= VMAX + 1e-6
    # It actually moves, through several key poses.
    assert np.abs(v).max() > 0.3 * VMAX
    assert len({s for s in sequence.sources if s.startswith("to:")}) >= 3


def test_sequence_is_smooth(sequence):
    v = motion.angular_velocity_deg_s(sequence, FPS)
    acc = np.diff(v, axis=0) * FPS
    # Minimum-jerk segments of at least 0.4 s: peak acceleration 5.77·Δ/T² ≤ 5.77·VMAX/(1.875·0.4).
    assert np.abs(acc).max() <= 5.78 * VMAX / (motion.MIN_JERK_PEAK * 0.4)
    # Velocity is continuous: zero at the keys, no jumps.
    assert np.abs(np.diff(v, axis=0)).max() < 0.35 * VMAX
    # Global yaw drifts slowly, translation (grounding) moves without jumps.
    R = sequence.global_rotation
    yaw = np.unwrap(np.arctan2(R[:, 1, 0], R[:, 0, 0]))
    assert np.abs(np.diff(yaw)).max() * FPS <= np.deg2rad(10.0) + 1e-9
    assert np.abs(np.diff(sequence.translation, axis=0)).max() < 0.05


def test_sequence_stays_valid_and_is_reproducible(sampler, sequence):
    assert rom.within_rom(sequence.angles).all()
    ok, _ = sampler.evaluate(sequence)
    assert ok.all()
    again = motion.key_pose_sequence(sampler, 240, FPS, VMAX, np.random.default_rng(0))
    assert np.array_equal(again.angles, sequence.angles)


def test_walk_cycle(body_model):
    w = motion.walk_cycle(80, fps=24.0, model=body_model)  # two cycles of 40 frames
    assert len(w) == 80
    assert rom.within_rom(w.angles).all()
    assert np.allclose(w.angles[:40], w.angles[40:], atol=1e-6)  # periodic, in place
    assert np.allclose(w.translation[:40], w.translation[40:], atol=1e-6)
    v = motion.angular_velocity_deg_s(w, 24.0)
    assert np.abs(v).max() < 400  # smooth, including across the loop
    hip_l = w.angles[:, rom.joint_index("hip.L"), 0]
    hip_r = w.angles[:, rom.joint_index("hip.R"), 0]
    assert hip_l.max() - hip_l.min() > 25  # the legs swing...
    assert np.corrcoef(hip_l, hip_r)[0, 1] < -0.5  # ...in antiphase
    knee = w.angles[:, rom.joint_index("knee.L"), 0]
    assert knee.max() > 25
    # Walking forward (-Y): feet planted in stance, the body's lowest point on the floor.
    fw = motion.walk_cycle(40, fps=24.0, model=body_model, in_place=False)
    assert fw.translation[-1, 1] < -0.6
    out = body_model(np.full((40, 6), 0.5), fw.to_anny(body_model))
    ankle = out.bone_heads[:, body_model.bone_index("foot.L")]
    speed = np.linalg.norm(np.diff(ankle, axis=0), axis=1) * 24.0
    assert np.sort(speed)[:8].mean() < 0.1  # a stance phase (the body moves at ~0.5 m/s)
    rest_floor = body_model(np.full((1, 6), 0.5)).vertices[0, :, 2].min()
    assert np.abs(out.vertices[:, :, 2].min(1) - rest_floor).max() < 0.04
