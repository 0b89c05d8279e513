"""Interpenetration tests for posed bodies: limbs through the torso or through each other.

Fast test (:class:`CapsuleBody`): every body part is a few capsules whose end points ride on bones
(limbs: joint to joint, split in two to follow the taper; torso: horizontal capsules in slabs, one
per height, each as wide and deep as the rest torso there; head and neck; hands; feet). Radii come
from the rest mesh of the body shape. Two capsules of non-adjacent parts penetrate when the
distance between their axes is below ``r1 + r2 - tolerance · min(r1, r2)``: touching (a hand on
the head, hands clasped, a foot against the other leg) is allowed, passing through is not. Only
forward kinematics of ~40 joints and a few hundred segment-segment distances per pose: thousands of
poses per second.

Slow reference (:func:`mesh_interpenetration`): on the actual skinned mesh, each part is closed by
fan-capping its boundary loops and the vertices of another part are tested inside it by the
generalised winding number; a pair penetrates when a vertex lies inside deeper than a tolerance.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from bodycorr.body.rom import Skeleton
from bodycorr.body.template import PART_NAMES, get_template

# Part pairs never tested (joined at a joint: their skins are continuous and fold into each other).
ADJACENT_PARTS: frozenset[frozenset[str]] = frozenset(
    frozenset(p)
    for s in ("L", "R")
    for p in (
        (f"upper_arm.{s}", f"lower_arm.{s}"), (f"lower_arm.{s}", f"hand.{s}"),
        (f"upper_leg.{s}", f"lower_leg.{s}"), (f"lower_leg.{s}", f"foot.{s}"),
    )
)  # fmt: skip


@dataclass(frozen=True)
class CapsuleSpec:
    name: str
    part: str
    bone_a: int
    point_a: np.ndarray  # rest position, rides on bone_a
    bone_b: int
    point_b: np.ndarray
    radius: float
    role: str  # "proximal", "distal", "slab", "neck", "head", ...


def _parts_full(num_vertices: int) -> np.ndarray:
    t = get_template()
    pf = t.parts[t.full_to_template]
    assert len(pf) == num_vertices
    return pf


def _seg_radius(P: np.ndarray, a: np.ndarray, b: np.ndarray, q: float, t_lo: float = 0.0, t_hi: float = 1.0) -> float:
    """Percentile ``q`` of the distances of points P (projecting inside [t_lo, t_hi]) to segment ab."""
    ab = b - a
    t = (P - a) @ ab / (ab @ ab)
    sel = (t >= t_lo) & (t <= t_hi)
    if sel.sum() < 8:
        sel = np.ones(len(P), bool)
    d = np.linalg.norm(P[sel] - (a + np.clip(t[sel], 0, 1)[:, None] * ab), axis=1)
    return float(np.percentile(d, q))


def build_capsules(sk: Skeleton) -> list[CapsuleSpec]:
    """Fit the capsules of one body shape from its rest mesh."""
    V = sk.rest_vertices
    parts = _parts_full(len(V))
    pid = {n: i for i, n in enumerate(PART_NAMES)}
    h = lambda n: sk.rest_heads[sk.index(n)]  # noqa: E731
    bi = sk.index
    caps: list[CapsuleSpec] = []
    q_limb = 50.0  # percentile of skin distance: limbs are not round, stay a bit inside the skin

    def limb(part: str, bone_a: str, a: np.ndarray, bone_b: str, b: np.ndarray, n: int = 2):
        """n capsules from joint a to joint b (the limb tapers). A limb's flesh is not centred on
        the joint line (the thigh bulges forward and inward), so each capsule end sits at the
        centre of the cross-section there. The first capsule rides on bone_a, the others on bone_b
        (the 02 twist bone: it only turns the limb about its own axis)."""
        P = V[parts == pid[part]]
        ab = b - a
        t = (P - a) @ ab / (ab @ ab)
        off = (P - a) - t[:, None] * ab

        def centre(tc: float) -> np.ndarray:
            tc = float(np.clip(tc, 0.1, 0.9))
            sel = np.abs(t - tc) < 0.1
            o = off[sel] if sel.sum() >= 8 else off
            return a + tc * ab + 0.5 * (np.percentile(o, 5, axis=0) + np.percentile(o, 95, axis=0))

        ts = np.linspace(0.0, 1.0, n + 1)
        for k in range(n):
            pa = a if k == 0 else centre(ts[k])
            pa = centre(0.1) if k == 0 else pa
            pb = centre(ts[k + 1]) if k < n - 1 else centre(0.9) + (b - a) * 0.1
            r = _seg_radius(P, pa, pb, q_limb, 0.0, 1.0)
            role = "proximal" if k == 0 else ("distal" if k == n - 1 else "middle")
            caps.append(CapsuleSpec(f"{part}/{k + 1}", part, bi(bone_a if k == 0 else bone_b), pa, bi(bone_b), pb, r, role))

    for s in ("L", "R"):
        limb(f"upper_arm.{s}", f"upperarm01.{s}", h(f"upperarm01.{s}"), f"upperarm02.{s}", h(f"lowerarm01.{s}"))
        limb(f"lower_arm.{s}", f"lowerarm01.{s}", h(f"lowerarm01.{s}"), f"lowerarm02.{s}", h(f"wrist.{s}"))
        limb(f"upper_leg.{s}", f"upperleg01.{s}", h(f"upperleg01.{s}"), f"upperleg02.{s}", h(f"lowerleg01.{s}"), 3)
        limb(f"lower_leg.{s}", f"lowerleg01.{s}", h(f"lowerleg01.{s}"), f"lowerleg02.{s}", h(f"foot.{s}"))
        # Hand: palm (wrist -> middle knuckle) and fingers (knuckle -> middle finger tip). A hand is
        # flat: the radius is its half thickness (along the palm normal), so hands lying on the
        # body or on each other do not count as overlap.
        P = V[parts == pid[f"hand.{s}"]]
        w, k = h(f"wrist.{s}"), h(f"finger3-1.{s}")
        tip = sk.rest_tails[bi(f"finger3-3.{s}")]
        R3 = sk.rest_rot[bi(f"finger3-1.{s}")]
        normal = np.cross(R3[:, 0], R3[:, 1])

        def half_thickness(a, b):
            ab = b - a
            t = (P - a) @ ab / (ab @ ab)
            sel = (t > 0.1) & (t < 0.9)
            return float(np.percentile(np.abs((P[sel] - a) @ normal - np.median((P[sel] - a) @ normal)), 90))

        caps.append(CapsuleSpec(f"hand.{s}/palm", f"hand.{s}", bi(f"wrist.{s}"), w + 0.25 * (k - w), bi(f"wrist.{s}"), k,
                                half_thickness(w, k), "proximal"))  # fmt: skip
        caps.append(CapsuleSpec(f"hand.{s}/fingers", f"hand.{s}", bi(f"finger3-1.{s}"), k, bi(f"finger3-3.{s}"), tip,
                                half_thickness(k, tip), "distal"))  # fmt: skip
        # Foot: ankle -> ball of the foot, lowered to the sole's middle.
        P = V[parts == pid[f"foot.{s}"]]
        a, b = h(f"foot.{s}"), h(f"toe3-1.{s}")
        r = _seg_radius(P, a, b, 50.0, 0.0, 1.0)
        caps.append(CapsuleSpec(f"foot.{s}", f"foot.{s}", bi(f"foot.{s}"), a, bi(f"foot.{s}"), b, r, "distal"))
    # Head: a vertical capsule through the skull (as wide as the head, the face dense with vertices
    # does not bias it: extents, not averages), and the neck.
    P = V[parts == pid["head"]]
    hh = h("head")
    S = P[P[:, 2] > hh[2] - 0.01]
    xh = float(np.percentile(np.abs(S[:, 0]), 97))
    y0, y1 = np.percentile(S[:, 1], [3, 97])
    r = 0.95 * min(xh, 0.5 * (y1 - y0))
    yc = 0.5 * (y0 + y1)
    top = float(S[:, 2].max())
    a = np.array([0.0, yc, hh[2] + 0.02])
    b = np.array([0.0, yc, max(top - 0.9 * r, hh[2] + 0.03)])
    caps.append(CapsuleSpec("head", "head", bi("head"), a, bi("head"), b, r, "head"))
    N = P[(P[:, 2] > h("neck01")[2]) & (P[:, 2] < hh[2] - 0.02)]
    rn = 0.9 * float(np.percentile(np.abs(N[:, 0]), 90))
    caps.append(CapsuleSpec("neck", "head", bi("neck01"), h("neck01"), bi("head"), hh, rn, "neck"))
    # Torso: horizontal capsules in slabs from the crotch to the armpits.
    P = V[parts == pid["torso"]]
    dom = sk.dominant_bone[parts == pid["torso"]]
    spine_bones = [bi(n) for n in ("spine05", "spine04", "spine03", "spine02", "spine01")]
    z_lo = h("upperleg01.L")[2] - 0.05
    z_hi = h("clavicle.L")[2] - 0.03
    for zi, z in enumerate(np.linspace(z_lo, z_hi, 8)):
        sel = np.abs(P[:, 2] - z) < 0.03
        S = P[sel]
        x0, x1 = np.percentile(S[:, 0], [3, 97])
        y0, y1 = np.percentile(S[:, 1], [3, 97])
        r = 0.5 * (y1 - y0) * 0.92
        half = max(0.5 * (x1 - x0) - r, 0.01)
        yc = 0.5 * (y0 + y1)
        bones, counts = np.unique(dom[sel], return_counts=True)
        bone = int(bones[counts.argmax()])
        bone = bone if bone in spine_bones else (spine_bones[-1] if z > h("spine02")[2] else 0)
        pa = np.array([-half, yc, z])
        pb = np.array([half, yc, z])
        caps.append(CapsuleSpec(f"torso/{zi}", "torso", bone, pa, bone, pb, float(r), "slab"))
    return caps


def _pair_allowed(c1: CapsuleSpec, c2: CapsuleSpec, sk: Skeleton) -> bool:
    """Whether a capsule pair is tested. Skipped: same part, joint neighbours, and a few contacts
    that are folds of the skin rather than one body part passing through another."""
    p1, p2 = c1.part, c2.part
    if p1 == p2 or frozenset((p1, p2)) in ADJACENT_PARTS:
        return False
    pair = {p1, p2}
    if pair == {"hand.L", "hand.R"}:
        return False  # clasped hands interlock their fingers
    for s in ("L", "R"):
        if pair == {f"upper_leg.{s}", f"foot.{s}"}:
            return False  # sitting on one's heels: the foot under the buttock, compressed
    if "torso" in pair:
        other, slab = (c2, c1) if p1 == "torso" else (c1, c2)
        base = other.part.split(".")[0]
        if other.role == "neck":
            return False
        if base in ("upper_arm", "upper_leg") and other.role != "distal":
            return False  # the shoulder sits in the upper chest, the hip in the pelvis (groin fold)
        if base == "head":
            return slab.point_a[2] < sk.rest_heads[sk.index("spine01"), 2]  # chin on the chest is contact
    if "head" in pair:
        other, head = (c2, c1) if p1 == "head" else (c1, c2)
        if head.role == "neck" and other.part.startswith("upper_arm") and other.role == "proximal":
            return False  # a shrugged shoulder against the neck
    return True


@dataclass(frozen=True, eq=False)
class CapsuleBody:
    """Capsules of one body shape and the pairs to test between them."""

    skeleton: Skeleton
    specs: tuple[CapsuleSpec, ...]
    bone_a: np.ndarray
    point_a: np.ndarray
    bone_b: np.ndarray
    point_b: np.ndarray
    radius: np.ndarray
    pairs: np.ndarray  # (P, 2)
    bones: np.ndarray  # the bones FK must compute

    @classmethod
    def from_skeleton(cls, sk: Skeleton) -> CapsuleBody:
        specs = tuple(build_capsules(sk))
        pairs = [(i, j) for i in range(len(specs)) for j in range(i + 1, len(specs)) if _pair_allowed(specs[i], specs[j], sk)]
        ba = np.array([c.bone_a for c in specs])
        bb = np.array([c.bone_b for c in specs])
        return cls(
            sk, specs, ba, np.array([c.point_a for c in specs]), bb, np.array([c.point_b for c in specs]),
            np.array([c.radius for c in specs]), np.array(pairs, dtype=np.int64), sk.bones_needed(np.concatenate([ba, bb])),
        )  # fmt: skip

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.specs)

    def endpoints(self, G: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sk = self.skeleton
        return sk.transform_points(G, H, self.bone_a, self.point_a), sk.transform_points(G, H, self.bone_b, self.point_b)

    def gaps(self, G: np.ndarray, H: np.ndarray) -> np.ndarray:
        """(B, P) surface gap of every tested pair: axis distance − r1 − r2 (negative: overlap), metres."""
        A, Bp = self.endpoints(G, H)
        i, j = self.pairs[:, 0], self.pairs[:, 1]
        d = segment_distance(A[:, i], Bp[:, i], A[:, j], Bp[:, j])
        return d - self.radius[i] - self.radius[j]

    def penetration(self, G: np.ndarray, H: np.ndarray) -> np.ndarray:
        """(B, P) overlap depth as a fraction of the thinner capsule's radius (≤ 0: no overlap)."""
        i, j = self.pairs[:, 0], self.pairs[:, 1]
        return -self.gaps(G, H) / np.minimum(self.radius[i], self.radius[j])

    def check(self, D: np.ndarray, tolerance: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
        """Test poses given as local-ref rotations D (B, J, 3, 3) (the global rotation is irrelevant).

        Returns:
            ok (B,) bool: no pair overlaps deeper than ``tolerance`` × the thinner radius;
            worst (B,) the deepest relative overlap.
        """
        D = np.array(D, dtype=np.float64)
        D[:, 0] = np.eye(3)
        G, H = self.skeleton.fk(D, bones=self.bones)
        pen = self.penetration(G, H)
        worst = pen.max(axis=1)
        return worst <= tolerance, worst

    def offending_pairs(self, D: np.ndarray, tolerance: float = 0.4) -> list[list[tuple[str, str, float]]]:
        """For each pose, the (capsule, capsule, relative depth) pairs deeper than ``tolerance``."""
        D = np.array(D, dtype=np.float64)
        D[:, 0] = np.eye(3)
        G, H = self.skeleton.fk(D, bones=self.bones)
        pen = self.penetration(G, H)
        names = self.names
        return [
            [(names[self.pairs[k, 0]], names[self.pairs[k, 1]], float(pen[b, k])) for k in np.flatnonzero(pen[b] > tolerance)]
            for b in range(len(pen))
        ]


def segment_distance(p1: np.ndarray, q1: np.ndarray, p2: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Closest distance between segments p1q1 and p2q2, batched over leading axes (Ericson §5.1.9)."""
    d1, d2, r = q1 - p1, q2 - p2, p1 - p2
    a = (d1 * d1).sum(-1)
    e = (d2 * d2).sum(-1)
    f = (d2 * r).sum(-1)
    c = (d1 * r).sum(-1)
    b = (d1 * d2).sum(-1)
    eps = 1e-12
    denom = a * e - b * b
    s = np.where(denom > eps, np.clip((b * f - c * e) / np.maximum(denom, eps), 0.0, 1.0), 0.0)
    t = (b * s + f) / np.maximum(e, eps)
    # t outside [0, 1]: clamp it and recompute s.
    t_c = np.clip(t, 0.0, 1.0)
    s = np.where(t != t_c, np.clip((b * t_c - c) / np.maximum(a, eps), 0.0, 1.0), s)
    t = t_c
    c1 = p1 + s[..., None] * d1
    c2 = p2 + t[..., None] * d2
    return np.linalg.norm(c1 - c2, axis=-1)


# --------------------------------------------------------------------------------------------
# Slow reference on the skinned mesh.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _ClosedPart:
    faces: np.ndarray  # (F, 3) into the posed vertex array extended by one centroid per loop
    loops: tuple[np.ndarray, ...]  # boundary loops (vertex ids) to cap at their centroid
    vertices: np.ndarray  # (n,) the part's vertex ids (full topology)


@functools.lru_cache(maxsize=2)
def _closed_parts(num_vertices: int, faces_key: bytes) -> dict[str, _ClosedPart]:
    faces = np.frombuffer(faces_key, dtype=np.int64).reshape(-1, 3)
    parts = _parts_full(num_vertices)
    body = np.zeros(num_vertices, bool)
    t = get_template()
    body[t.template_to_full] = True
    fb = faces[body[faces].all(1)]
    fp = parts[fb]
    # Each face goes to the part of the majority of its corners (first corner on a three-way tie).
    maj = np.where(fp[:, 1] == fp[:, 2], fp[:, 1], fp[:, 0])
    out = {}
    for pi, name in enumerate(PART_NAMES):
        F = fb[maj == pi]
        e = np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]])
        key = np.sort(e, 1)
        uniq, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        boundary = e[cnt[inv.ravel()] == 1]  # directed boundary edges
        nxt: dict[int, list[int]] = {}
        for a, b in boundary:
            nxt.setdefault(int(a), []).append(int(b))
        loops, seen = [], set()
        for a, b in boundary:
            if (int(a), int(b)) in seen:
                continue
            loop, u, v = [int(a)], int(a), int(b)
            seen.add((u, v))
            while v != loop[0] and len(loop) < 100000:
                loop.append(v)
                cand = [w for w in nxt.get(v, []) if (v, w) not in seen]
                if not cand:
                    break
                seen.add((v, cand[0]))
                v = cand[0]
            loops.append(np.array(loop))
        out[name] = _ClosedPart(F, tuple(loops), np.unique(F))
    return out


def _capped_triangles(V: np.ndarray, part: _ClosedPart) -> np.ndarray:
    tris = [V[part.faces]]
    for loop in part.loops:
        c = V[loop].mean(0)
        a, b = V[loop], V[np.roll(loop, -1)]
        # Boundary edges run with the part's orientation; the cap closes them with reversed winding.
        tris.append(np.stack([b, a, np.broadcast_to(c, a.shape)], 1))
    return np.concatenate(tris)


def winding_number(points: np.ndarray, tris: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Generalised winding number of points (N, 3) w.r.t. triangles (F, 3, 3) (Van Oosterom-Strackee)."""
    out = np.zeros(len(points))
    for s in range(0, len(points), chunk):
        P = points[s : s + chunk, None, None, :]
        abc = tris[None] - P  # (n, F, 3, 3)
        a, b, c = abc[:, :, 0], abc[:, :, 1], abc[:, :, 2]
        la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
        det = (a * np.cross(b, c)).sum(-1)
        den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out[s : s + chunk] = np.arctan2(det, den).sum(-1) / (2 * np.pi)
    return out


def tested_part_pairs() -> list[tuple[str, str]]:
    """Part pairs the reference tests: every pair except a part with itself and joint neighbours."""
    return [
        (a, b) for i, a in enumerate(PART_NAMES) for b in PART_NAMES[i + 1 :] if frozenset((a, b)) not in ADJACENT_PARTS
    ]


def mesh_interpenetration(
    vertices: np.ndarray,
    faces: np.ndarray,
    rest_vertices: np.ndarray,
    pairs: list[tuple[str, str]] | None = None,
    seam: float = 0.05,
    max_points: int = 400,
) -> dict[tuple[str, str], float]:
    """Slow, obvious reference: how deep the vertices of one part go inside another, on the mesh.

    Each part of the posed mesh is closed by fan-capping its boundary loops; vertices of the other
    part are tested with the winding number (inside: > 0.5), both ways round. Vertices that lie
    within ``seam`` of the other part in the rest pose (the skin they share at a joint) are skipped.

    Args:
        vertices: (V, 3) posed mesh (full Anny topology). faces: (F, 3).
        rest_vertices: (V, 3) the same body in its rest pose.
        pairs: part pairs to test (default :func:`tested_part_pairs`).
    Returns:
        {(part_a, part_b): depth}: the largest distance (m) from an inside vertex to the other
        part's surface vertices; 0 when none is inside.
    """
    from scipy.spatial import cKDTree

    V = np.asarray(vertices, dtype=np.float64)
    R = np.asarray(rest_vertices, dtype=np.float64)
    closed = _closed_parts(len(V), np.ascontiguousarray(faces, dtype=np.int64).tobytes())
    pairs = tested_part_pairs() if pairs is None else pairs
    rng = np.random.default_rng(0)
    out = {}
    for a, b in pairs:
        depth = 0.0
        for qa, qb in ((a, b), (b, a)):
            pa, pb = closed[qa], closed[qb]
            ids = pa.vertices
            near_rest = cKDTree(R[pb.vertices]).query(R[ids])[0] < seam
            ids = ids[~near_rest]
            if len(ids) == 0:
                continue
            # Only points inside the other part's bounding box can be inside it.
            lo, hi = V[pb.vertices].min(0), V[pb.vertices].max(0)
            ids = ids[((V[ids] >= lo) & (V[ids] <= hi)).all(1)]
            if len(ids) == 0:
                continue
            if len(ids) > max_points:
                ids = rng.choice(ids, max_points, replace=False)
            w = winding_number(V[ids], _capped_triangles(V, pb))
            inside = ids[np.abs(w) > 0.5]
            if len(inside):
                d = cKDTree(V[pb.vertices]).query(V[inside])[0]
                depth = max(depth, float(d.max()))
        out[(a, b)] = depth
    return out
