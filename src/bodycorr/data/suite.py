"""Fixed test suites regenerated identically from their name: synthetic-v1 (FAUST's layout on Anny)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bodycorr.body.anny_model import get_body_model
from bodycorr.body.shape import identity_rng, sample_identity
from bodycorr.body.template import get_template
from bodycorr.common.cache import cached_arrays, content_hash
from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.camera import Camera, Intrinsics
from bodycorr.geometry.mesh import Mesh
from bodycorr.render.frame import render
from bodycorr.render.noise import DepthNoiseConfig, add_depth_noise
from bodycorr.render.raycast import RayCaster
from bodycorr.render.rig import random_camera
from bodycorr.render.truth import body_truth

SUITES = {
    # 10 test identities x 10 poses; one Kinect v2 view of each; 60 intra- and 40 inter-subject pairs.
    "synthetic-v1": dict(identities=10, poses=10, intra=60, inter=40, seed=2016, version=1),
}


@dataclass(frozen=True, eq=False)
class Suite:
    """A test suite.

    Attributes:
        name: suite name.
        vertices: (S, Vt, 3) float32 full meshes in template topology: vertex i of every mesh is
            template vertex i (as in registered human datasets).
        faces: (Ft, 3) the template's faces.
        identity, pose: (S,) which person and which pose each shape is.
        phenotypes: (S, 6).
        depth_clean, depth_noisy: (S, H, W) float32 Kinect v2 views, metres (0 = none).
        vertex_clean, vertex_noisy: (S, H, W) int32 true template vertex per pixel (-1 = none).
        K: (4,) fx, fy, cx, cy; R: (S, 3, 3), t: (S, 3) the view cameras (world = mesh frame).
        intra, inter: (60, 2), (40, 2) shape index pairs (source, target).
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    identity: np.ndarray
    pose: np.ndarray
    phenotypes: np.ndarray
    depth_clean: np.ndarray
    depth_noisy: np.ndarray
    vertex_clean: np.ndarray
    vertex_noisy: np.ndarray
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    intra: np.ndarray
    inter: np.ndarray

    def __len__(self) -> int:
        return int(self.vertices.shape[0])

    def shape_name(self, i: int) -> str:
        return f"tr_{self.identity[i]:02d}_{self.pose[i]:02d}"

    def mesh(self, i: int) -> Mesh:
        return Mesh(self.vertices[i].astype(np.float64), self.faces, name=f"{self.name}/{self.shape_name(i)}")

    def camera(self, i: int) -> Camera:
        k = Intrinsics.kinect_v2()
        return Camera(Intrinsics(*self.K, width=k.width, height=k.height), self.R[i], self.t[i])

    def pairs(self, kind: str) -> np.ndarray:
        if kind not in ("intra", "inter"):
            raise BodycorrError(f"pairs: kind must be 'intra' or 'inter', got {kind!r}.")
        return self.intra if kind == "intra" else self.inter


def _build(name: str, spec: dict) -> dict[str, np.ndarray]:
    from bodycorr.body.pose import PoseSampler, PoseSamplerConfig

    model, template = get_body_model(), get_template()
    sampler = PoseSampler(PoseSamplerConfig(), model=model)
    seed = spec["seed"]
    n_id, n_pose = spec["identities"], spec["poses"]
    k = Intrinsics.kinect_v2()
    out: dict[str, list] = {key: [] for key in ("vertices", "identity", "pose", "phenotypes", "depth_clean", "depth_noisy",
                                                 "vertex_clean", "vertex_noisy", "R", "t")}  # fmt: skip
    caster = None
    for i in range(n_id):
        phen = sample_identity("test", i, seed).phenotypes
        for p in range(n_pose):
            rng = identity_rng("test", i * 1000 + p, seed + 7)
            pose = sampler.sample(1, rng).to_anny(model)
            v = model(phen[None], pose).vertices[0]
            v = v - np.array([*v[:, :2].mean(0), v[:, 2].min()], dtype=np.float32)
            caster = RayCaster(v, model.faces) if caster is None else (caster.update(v) or caster)
            centre = 0.5 * (v.min(0) + v.max(0))
            cam = random_camera(rng, k, centre, (2.0, 3.2), (0.0, 20.0), target_jitter=0.05, roll_deg=2.0)
            frame = render(caster, cam)
            noisy = add_depth_noise(frame, DepthNoiseConfig.preset("kinect_v2"), rng)
            out["vertices"].append(v[template.template_to_full])
            out["identity"].append(i)
            out["pose"].append(p)
            out["phenotypes"].append(phen)
            out["depth_clean"].append(frame.depth)
            out["depth_noisy"].append(noisy.depth)
            out["vertex_clean"].append(body_truth(frame, template).template_vertex)
            out["vertex_noisy"].append(body_truth(noisy, template).template_vertex)
            out["R"].append(cam.R)
            out["t"].append(cam.t)
    arrays = {key: np.stack(val) for key, val in out.items()}
    arrays["vertices"] = arrays["vertices"].astype(np.float32)
    arrays["K"] = np.array([k.fx, k.fy, k.cx, k.cy])
    rng = np.random.default_rng(seed)
    ident = arrays["identity"]
    all_pairs = [(a, b) for a in range(len(ident)) for b in range(len(ident)) if a != b]
    intra = [pr for pr in all_pairs if ident[pr[0]] == ident[pr[1]]]
    inter = [pr for pr in all_pairs if ident[pr[0]] != ident[pr[1]]]
    arrays["intra"] = np.array(intra)[rng.choice(len(intra), spec["intra"], replace=False)]
    arrays["inter"] = np.array(inter)[rng.choice(len(inter), spec["inter"], replace=False)]
    return arrays


def load_suite(name: str = "synthetic-v1") -> Suite:
    """The suite called ``name``, built on first use (about a minute) and cached on disk."""
    if name not in SUITES:
        raise BodycorrError(f"suite {name!r}: unknown. Known suites: {', '.join(SUITES)}.")
    spec = SUITES[name]
    template = get_template()
    key = content_hash("suite", name, spec, template.mesh.vertices, template.mesh.faces)
    a = cached_arrays("suites", key, lambda: _build(name, spec), compress=True)
    return Suite(name=name, faces=template.mesh.faces, **{k: a[k] for k in a})
