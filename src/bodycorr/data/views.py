"""Scene sampling: a person (shape + pose) seen by a depth sensor, with exact per-pixel truth."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from bodycorr.body.anny_model import BodyModel, get_body_model
from bodycorr.body.shape import Split, identity_rng, sample_identity
from bodycorr.body.template import Template, get_template
from bodycorr.common.errors import BodycorrError
from bodycorr.geometry.camera import Camera, Intrinsics
from bodycorr.render.appearance import BodyCoords, body_coords
from bodycorr.render.frame import Frame, render
from bodycorr.render.garments import GarmentConfig, Outfit, clothe, rest_offsets, sample_outfit
from bodycorr.render.noise import DepthNoiseConfig, add_depth_noise
from bodycorr.render.raycast import RayCaster
from bodycorr.render.rig import random_camera
from bodycorr.render.truth import body_truth


@dataclass(frozen=True)
class ViewConfig:
    """How training and test views are made.

    Attributes:
        size: output image side in pixels (square crops).
        framing: "crop": the camera is placed 1.5 to 4 m away and its intrinsics are those of a
            crop around the person, who fills ``fill`` of the image (what the descriptor network
            sees; sensor images are cropped the same way at inference). "sensor": the raw
            ``sensor`` preset image.
        sensor: camera preset for ``framing="sensor"``.
        fill: range of the fraction of the image side the person's extent covers.
        noise: "none", "kinect_v2", or "mixed" (each view noisy with probability ``noisy_share``).
        views_per_body: views rendered of each posed body.
        poses_per_identity: posed bodies per identity (person).
        population: "adult" (teenagers to elders) or "all" (children too).
        clothed_share: share of people (identities) dressed in garments (:mod:`bodycorr.render.garments`):
            each person is drawn clothed or not, and one outfit, once, from its own random stream, and
            keeps them in every pose and view; the truth of a garment pixel is the body point under
            it. 0 (the default): bare bodies, the views exactly as before this option existed.
        garments: which garments and how loose (used when ``clothed_share > 0``).
    """

    size: int = 256
    framing: Literal["crop", "sensor"] = "crop"
    sensor: Literal["kinect_v2", "square512"] = "kinect_v2"
    distance_range: tuple[float, float] = (1.5, 4.0)
    elevation_deg: tuple[float, float] = (-10.0, 35.0)
    fill: tuple[float, float] = (0.7, 0.95)
    noise: Literal["none", "kinect_v2", "mixed"] = "mixed"
    noisy_share: float = 0.5
    views_per_body: int = 4
    poses_per_identity: int = 4
    population: Literal["adult", "all"] = "adult"
    clothed_share: float = 0.0
    garments: GarmentConfig = GarmentConfig()

    def __post_init__(self) -> None:
        object.__setattr__(self, "garments", GarmentConfig.from_value(self.garments))  # JSON data: a dict
        if not (0.0 <= self.clothed_share <= 1.0):
            raise BodycorrError(f"clothed_share {self.clothed_share}: must be a share between 0 (bare bodies) and 1 (everyone clothed).")
        if not (16 <= self.size <= 4096):
            raise BodycorrError(f"view size {self.size}: must be between 16 and 4096 pixels. Pass e.g. --size 256.")
        if self.views_per_body < 1 or self.poses_per_identity < 1:
            raise BodycorrError("views_per_body and poses_per_identity must be at least 1.")
        lo, hi = self.distance_range
        if not (0.3 <= lo <= hi <= 20.0):
            raise BodycorrError(f"camera distance range {self.distance_range}: must lie within 0.3 to 20 m, low <= high.")


@dataclass(frozen=True, eq=False)
class View:
    """One depth view with truth (of the body under the garments when the person is clothed).

    Attributes:
        depth: (H, W) float32 metres, 0 = no data.
        template_vertex: (H, W) int32 template vertex seen at the pixel, -1 = none.
        template_face: (H, W) int32 template triangle, -1 = none.
        template_bary: (H, W, 3) float32 barycentrics in that triangle.
        camera: the camera (intrinsics of the crop and pose).
        phenotypes: (6,) the person's shape.
        identity: identity index within its split.
        body: index of the posed body the view shows.
        noisy: whether sensor noise was applied.
        extras: ``"outfit"``: the person's :class:`~bodycorr.render.garments.Outfit` when clothed.
    """

    depth: np.ndarray
    template_vertex: np.ndarray
    template_face: np.ndarray
    template_bary: np.ndarray
    camera: Camera
    phenotypes: np.ndarray
    identity: int
    body: int
    noisy: bool
    extras: dict = field(default_factory=dict)


CLOTHING_KEYS = ("clothed_share", "garments")


def view_config_dict(config: ViewConfig) -> dict:
    """``asdict(config)`` for shard metadata: without the clothing keys while clothing is off, so
    folders written before the option existed are still recognised as made with the same settings."""
    d = asdict(config)
    if config.clothed_share == 0:
        for k in CLOTHING_KEYS:
            d.pop(k)
    return d


def crop_intrinsics(points_world: np.ndarray, camera: Camera, size: int, fill: float, rng: np.random.Generator | None = None) -> Intrinsics:
    """Intrinsics of a square ``size`` crop in which ``points_world`` (N, 3) span ``fill`` of the side.

    The camera pose is kept; only focal length and principal point change (a crop and zoom of an
    ideal sensor). A small random offset is applied when ``rng`` is given.
    """
    pc = camera.world_to_camera(points_world)
    front = pc[:, 2] > 1e-3
    if not front.all():  # (a copy only when some point is behind the camera)
        pc = pc[front]
    x, y = pc[:, 0] / pc[:, 2], pc[:, 1] / pc[:, 2]
    lo, hi = np.array([x.min(), y.min()]), np.array([x.max(), y.max()])
    f = fill * size / max(float((hi - lo).max()), 1e-6)
    centre = 0.5 * (lo + hi)
    shift = np.zeros(2) if rng is None else rng.uniform(-1, 1, 2) * 0.5 * (1 - fill) * size
    cx, cy = size / 2 - f * centre[0] + shift[0], size / 2 - f * centre[1] + shift[1]
    return Intrinsics(fx=f, fy=f, cx=float(np.clip(cx, 0, size)), cy=float(np.clip(cy, 0, size)), width=size, height=size)


def sensor_intrinsics(config: ViewConfig) -> Intrinsics:
    return Intrinsics.kinect_v2() if config.sensor == "kinect_v2" else Intrinsics.square(512)


class PoseSource:
    """Anny pose parameters for a posed body: the project's pose sampler, or the rest pose.

    Call ``source(n, rng) -> (n, J, 4, 4)`` Anny ``local-ref`` deltas (global yaw included).
    """

    def __init__(self, model: BodyModel, kind: Literal["sampler", "rest"] = "sampler"):
        self.model = model
        self.kind = kind
        self._sampler = None
        if kind == "sampler":
            from bodycorr.body.pose import PoseSampler, PoseSamplerConfig

            self._sampler = PoseSampler(PoseSamplerConfig(), model=model)

    def __call__(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self._sampler is not None:
            return self._sampler.sample(n, rng).to_anny(self.model)
        out = np.tile(np.eye(4, dtype=np.float32), (n, self.model.num_bones, 1, 1))
        yaw = rng.uniform(0, 2 * np.pi, n)
        c, s = np.cos(yaw), np.sin(yaw)
        out[:, 0, 0, 0], out[:, 0, 0, 1], out[:, 0, 1, 0], out[:, 0, 1, 1] = c, -s, s, c
        return out

    def each(self, rngs: list[np.random.Generator]) -> np.ndarray:
        """One pose from each generator, (len(rngs), J, 4, 4): the same values as
        ``np.concatenate([source(1, rng) for rng in rngs])``, with the sampler's work batched."""
        if self._sampler is not None:
            return self._sampler.sample_each(rngs, 1).to_anny(self.model)
        return np.concatenate([self(1, r) for r in rngs]) if rngs else np.zeros((0, self.model.num_bones, 4, 4), np.float32)


@contextlib.contextmanager
def _torch_threads(n: int):
    """Run torch on ``n`` threads inside the block. The Anny forward's float rounding can depend
    on torch's threading, so the engine fixes it (one thread: also no oversubscription when one
    worker process runs per core). Setting threads at process start instead (before Anny is
    loaded) changed the bytes, so worker processes are left as they start."""
    import torch

    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if old != n:
            torch.set_num_threads(old)


# Seed offset of the per-identity clothing stream (disjoint from the pose, view and RGB-look streams).
_OUTFIT_STREAM = 5_000_011

# Bodies are posed in aligned blocks of this many (one batched pose sampling and Anny forward per
# block). A body's vertices depend on its block only, never on the order bodies are asked for;
# changing this constant changes the generated data in the last float bits (Anny's batched
# forward does not round like its one-body forward).
POSE_BLOCK = 16


class ViewGenerator:
    """Makes :class:`View` objects for a split, deterministically from (seed, split, body index).

    Body ``b`` is pose ``b % poses_per_identity`` of identity ``b // poses_per_identity``; its
    views are ``b * views_per_body ...``. One generator holds one ray caster: use one per process.

    Speed: bodies are posed a block of :data:`POSE_BLOCK` at a time (one batched pose sampling
    and Anny forward; the last block is kept), so ask for bodies in increasing order; views are
    rendered by :meth:`RayCaster.cast_pinhole` (no BVH). About 8 ms of CPU per 256x256 view.
    """

    def __init__(self, config: ViewConfig, split: Split, seed: int = 0, pose_kind: Literal["sampler", "rest"] = "sampler"):
        identity_rng(split, 0, seed)  # validates the split
        self.config = config
        self.split = split
        self.seed = seed
        self.model = get_body_model()
        self.template: Template = get_template()
        self.poses = PoseSource(self.model, pose_kind)
        self._caster: RayCaster | None = None
        self._block: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._noise = DepthNoiseConfig.preset("kinect_v2")
        self._outfits: dict[int, tuple[Outfit, np.ndarray] | None] = {}
        self._coords: BodyCoords | None = None

    def _pose_block(self, k: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """Block ``k``: bodies ``k * POSE_BLOCK ...``, posed in one batch: (k, vertices (K, V, 3), phenotypes (K, 6), identities (K,))."""
        bodies = range(k * POSE_BLOCK, (k + 1) * POSE_BLOCK)
        ppi = self.config.poses_per_identity
        idents = np.array([b // ppi for b in bodies], dtype=np.int64)
        phen_of = {i: sample_identity(self.split, int(i), self.seed, self.config.population).phenotypes for i in np.unique(idents)}
        phen = np.stack([phen_of[i] for i in idents])
        pose = self.poses.each([identity_rng(self.split, b, self.seed + 1_000_003) for b in bodies])
        with _torch_threads(1):
            verts = self.model(phen, pose).vertices
        for v in verts:  # stand on the ground at the origin: feet at z = 0, centred in x, y
            v -= np.array([*v[:, :2].mean(0), v[:, 2].min()], dtype=np.float32)
        return k, verts, phen, idents

    def _body(self, b: int) -> tuple[np.ndarray, np.ndarray, int]:
        if b < 0:
            raise BodycorrError(f"body index {b}: must be >= 0.")
        k = b // POSE_BLOCK
        if self._block is None or self._block[0] != k:
            self._block = self._pose_block(k)
        _, verts, phen, idents = self._block
        i = b - k * POSE_BLOCK
        return verts[i], phen[i], int(idents[i])

    def body(self, b: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Posed body ``b``: vertices (V, 3) full Anny topology, phenotypes (6,), identity index.

        Pose ``b``'s random stream as ever; the Anny forward runs for its whole block of
        :data:`POSE_BLOCK` bodies (kept for the next calls), so ask for bodies in order.
        """
        verts, phen, ident = self._body(b)
        return verts.copy(), phen.copy(), ident

    def caster(self, vertices: np.ndarray) -> RayCaster:
        if self._caster is None:
            self._caster = RayCaster(vertices, self.model.faces, bvh=False)  # rendered by cast_pinhole: no BVH
        else:
            self._caster.update(vertices)
        return self._caster

    def outfit(self, ident: int) -> Outfit | None:
        """Identity ``ident``'s outfit, or None when it is not clothed (always None at
        ``clothed_share`` 0); drawn from the identity's own stream, the same in every view."""
        got = self._outfit(ident)
        return None if got is None else got[0]

    def _outfit(self, ident: int) -> tuple[Outfit, np.ndarray] | None:
        if self.config.clothed_share <= 0:
            return None
        if ident not in self._outfits:
            if len(self._outfits) > 256:
                self._outfits.clear()
            rng = identity_rng(self.split, ident, self.seed + _OUTFIT_STREAM)
            clothed = rng.random() < self.config.clothed_share  # the first draw: a larger share keeps everyone clothed before
            outfit = sample_outfit(rng, self.config.garments) if clothed else None
            self._outfits[ident] = None if outfit is None else (outfit, rest_offsets(outfit, self._body_coords()))
        return self._outfits[ident]

    def _body_coords(self) -> BodyCoords:
        if self._coords is None:
            self._coords = body_coords(self.template)
        return self._coords

    def views_of_body(self, b: int) -> list[View]:
        cfg = self.config
        verts, phen, ident = self._body(b)
        dressed = self._outfit(ident)
        # the person as the sensor sees them (garments on the posed body); cameras framed on the body,
        # so a clothed person's views are those of the same person bare
        caster = self.caster(verts if dressed is None else clothe(dressed[0], self._body_coords(), verts, self.model.faces, base=dressed[1]))
        rng = identity_rng(self.split, b, self.seed + 2_000_003)
        centre = 0.5 * (verts.min(0) + verts.max(0))
        points = verts.astype(np.float64)  # what crop_intrinsics would convert for every view
        sensor = sensor_intrinsics(cfg)
        out = []
        for k in range(cfg.views_per_body):
            cam = random_camera(rng, sensor, centre, cfg.distance_range, cfg.elevation_deg)
            if cfg.framing == "crop":
                cam = Camera(crop_intrinsics(points, cam, cfg.size, rng.uniform(*cfg.fill), rng), cam.R, cam.t)
            frame = render(caster, cam, "pinhole")
            noisy = cfg.noise == "kinect_v2" or (cfg.noise == "mixed" and rng.random() < cfg.noisy_share)
            if noisy:
                frame = add_depth_noise(frame, self._noise, rng)
            out.append(self._view(frame, phen, ident, b, noisy, None if dressed is None else dressed[0]))
        return out

    def _view(self, frame: Frame, phen: np.ndarray, ident: int, b: int, noisy: bool, outfit: Outfit | None = None) -> View:
        truth = body_truth(frame, self.template)
        return View(
            depth=frame.depth, template_vertex=truth.template_vertex, template_face=truth.template_face,
            template_bary=truth.template_bary, camera=frame.camera, phenotypes=phen, identity=ident, body=b, noisy=noisy,
            extras={} if outfit is None else {"outfit": outfit},
        )  # fmt: skip

    def view(self, i: int) -> View:
        """View ``i`` of the split (renders its whole body: prefer :meth:`views_of_body` in loops)."""
        return self.views_of_body(i // self.config.views_per_body)[i % self.config.views_per_body]
