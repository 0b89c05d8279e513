"""RGB scenes of clothed synthetic people with exact per-pixel body truth (BodyMap training data), and their shards."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from scipy.spatial import cKDTree

from bodycorr.body.anny_model import get_body_model
from bodycorr.body.shape import Split, identity_rng, sample_identity
from bodycorr.body.template import PART_NAMES, Template, get_template
from bodycorr.common.errors import BodycorrError
from bodycorr.common.fileio import ensure_dir, save_npz_atomic, write_json_atomic
from bodycorr.data.datasets import ShardFiles
from bodycorr.data.shards import collect_views, shard_is_valid, shard_name
from bodycorr.data.views import PoseSource, crop_intrinsics
from bodycorr.geometry.camera import Camera, Intrinsics
from bodycorr.render.appearance import (
    Appearance, Lighting, albedo, body_coords, colour_jitter, displace, sample_appearance, sample_background,
    sample_lighting, sample_occluders, shade, surface_points, vertex_normals, vertex_offsets,
)  # fmt: skip
from bodycorr.render.frame import Frame, render
from bodycorr.render.raycast import RayCaster
from bodycorr.render.rig import random_camera

IMAGE_SHARD_FORMAT = 1
_UPPER_PARTS = tuple(PART_NAMES.index(p) for p in ("head", "torso", "upper_arm.L", "upper_arm.R"))
# Seed offsets of the random streams (disjoint from ViewGenerator's pose stream, whose poses we share).
_POSE_STREAM, _VIEW_STREAM, _LOOK_STREAM, _SEQ_STREAM = 1_000_003, 2_000_003, 3_000_017, 4_000_037


@dataclass(frozen=True)
class ImageConfig:
    """How RGB training and test views are made (defaults sized for CPU training).

    Attributes:
        size: output image side in pixels (square crops around the main person).
        distance_range: camera distance range in metres; elevation_deg: camera elevation range.
        fill: range of the fraction of the image side the main person's extent covers.
        views_per_body: views rendered of each posed body; poses_per_identity: bodies per person.
        population: "adult" (teenagers to elders) or "all" (children too).
        multi_person_share: share of frames with 1-2 extra people beside, before or behind
            the main person (BodyMap's crowd augmentation).
        upper_body_share: share of frames framing only the upper body (head, torso, upper arms).
        occluder_share: share of frames with objects drawn in front of the people.
        colour_jitter: strength of the brightness/contrast/hue/saturation/noise jitter, 0 = off.
    """

    size: int = 128
    distance_range: tuple[float, float] = (1.5, 4.0)
    elevation_deg: tuple[float, float] = (-10.0, 35.0)
    fill: tuple[float, float] = (0.7, 0.95)
    views_per_body: int = 4
    poses_per_identity: int = 4
    population: Literal["adult", "all"] = "adult"
    multi_person_share: float = 0.2
    upper_body_share: float = 0.15
    occluder_share: float = 0.3
    colour_jitter: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)) or not (16 <= self.size <= 4096):
            raise BodycorrError(f"image size {self.size}: must be a whole number of pixels between 16 and 4096. Pass e.g. size=128.")
        if self.views_per_body < 1 or self.poses_per_identity < 1:
            raise BodycorrError("image config: views_per_body and poses_per_identity must be at least 1.")
        lo, hi = self.distance_range
        if not (0.3 <= lo <= hi <= 20.0):
            raise BodycorrError(f"image config: distance_range {self.distance_range} must lie within 0.3 to 20 m, low <= high.")
        lo, hi = self.elevation_deg
        if not (-80.0 <= lo <= hi <= 80.0):
            raise BodycorrError(f"image config: elevation_deg {self.elevation_deg} must lie within -80 to 80 degrees, low <= high.")
        lo, hi = self.fill
        if not (0.1 <= lo <= hi <= 1.5):
            raise BodycorrError(f"image config: fill {self.fill} must lie within 0.1 to 1.5, low <= high.")
        if self.population not in ("adult", "all"):
            raise BodycorrError(f"image config: population {self.population!r} is unknown. Choose 'adult' or 'all'.")
        for name in ("multi_person_share", "upper_body_share", "occluder_share"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):
                raise BodycorrError(f"image config: {name} = {v} must be a share between 0 and 1.")
        if not (0.0 <= self.colour_jitter <= 3.0):
            raise BodycorrError(f"image config: colour_jitter = {self.colour_jitter} must be between 0 (off) and 3.")


@dataclass(frozen=True, eq=False)
class ImageView:
    """One RGB view with truth for every visible person pixel.

    Attributes:
        rgb: (H, W, 3) uint8 image.
        depth: (H, W) float32 metres of the rendered people (hair and clothes included), 0 = none.
        instance: (H, W) int16: 0 = main person, 1.. = other people, -1 = background or occluder.
        template_face: (H, W) int32 template triangle under the pixel (the body point under hair
            or cloth), -1 where ``instance < 0``.
        template_bary: (H, W, 3) float32 barycentrics in that triangle.
        template_vertex: (H, W) int32 nearest template vertex, -1 where ``instance < 0``.
        camera: the camera (crop intrinsics and pose).
        identity: the main person's identity index within its split.
        body: index of the posed body shown (for :meth:`ImageViewGenerator.sequence`: the frame).
        people: number of people placed in the scene (some may be out of view).
        upper_body: whether the crop frames only the upper body.
        occluded: whether occluders were drawn.
    """

    rgb: np.ndarray
    depth: np.ndarray
    instance: np.ndarray
    template_face: np.ndarray
    template_bary: np.ndarray
    template_vertex: np.ndarray
    camera: Camera
    identity: int
    body: int
    people: int = 1
    upper_body: bool = False
    occluded: bool = False

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool: pixels showing a person."""
        return self.instance >= 0


@dataclass(frozen=True, eq=False)
class _Person:
    vertices: np.ndarray  # (V, 3) displaced (hair, clothes)
    normals: np.ndarray  # (V, 3) smooth normals of the displaced surface
    look: Appearance


class ImageViewGenerator:
    """Makes :class:`ImageView` objects for a split, deterministically from (config, split, seed, body index).

    Body ``b`` is pose ``b % poses_per_identity`` of identity ``b // poses_per_identity`` (the same
    shapes and poses as :class:`~bodycorr.data.views.ViewGenerator` with the same seed); a person
    keeps one appearance (clothes, hair, skin) across poses and views. Extra people in crowd
    frames are other identities of the same split. Holds ray casters: use one per process.
    """

    def __init__(self, config: ImageConfig, split: Split, seed: int = 0, pose_kind: Literal["sampler", "rest"] = "sampler"):
        if not isinstance(config, ImageConfig):
            raise BodycorrError(f"ImageViewGenerator: config must be an ImageConfig, got {type(config).__name__}.")
        identity_rng(split, 0, seed)  # validates the split
        self.config = config
        self.split = split
        self.seed = seed
        self.model = get_body_model()
        self.faces = self.model.faces
        self.template: Template = get_template()
        self.coords = body_coords(self.template)
        self.poses = PoseSource(self.model, pose_kind)
        self._casters: dict[int, RayCaster] = {}
        self._looks: dict[int, tuple[Appearance, np.ndarray]] = {}
        self._upper = np.isin(self.coords.part, _UPPER_PARTS)

    # -- people -----------------------------------------------------------------------------

    def appearance(self, ident: int) -> tuple[Appearance, np.ndarray]:
        """Identity ``ident``'s look and its per-vertex offsets (V,) (the same in every view)."""
        if ident not in self._looks:
            if len(self._looks) > 64:
                self._looks.clear()
            look = sample_appearance(identity_rng(self.split, ident, self.seed + _LOOK_STREAM), self.template)
            self._looks[ident] = (look, vertex_offsets(look, self.coords))
        return self._looks[ident]

    def _phenotypes(self, ident: int) -> np.ndarray:
        return sample_identity(self.split, ident, self.seed, self.config.population).phenotypes

    @staticmethod
    def _grounded(verts: np.ndarray) -> np.ndarray:
        """Feet at z = 0, centred in x, y."""
        return verts - np.array([*verts[:, :2].mean(0), verts[:, 2].min()], dtype=np.float32)

    def body(self, b: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Posed body ``b`` (undressed): vertices (V, 3) full Anny topology, phenotypes (6,), identity."""
        ident = b // self.config.poses_per_identity
        phen = self._phenotypes(ident)
        pose = self.poses(1, identity_rng(self.split, b, self.seed + _POSE_STREAM))
        return self._grounded(self.model(phen[None], pose).vertices[0]), phen, ident

    def _dress(self, verts: np.ndarray, ident: int) -> _Person:
        look, off = self.appearance(ident)
        shown = displace(verts, vertex_normals(verts, self.faces), off)
        return _Person(shown, vertex_normals(shown, self.faces), look)

    def _extras(self, rng: np.random.Generator, main: np.ndarray, ident: int, camera: Camera) -> list[_Person]:
        """1 or 2 other people of the split standing beside, before or behind the main one."""
        n = int(rng.integers(1, 3))
        others = [int((ident + 1 + rng.integers(0, 1_000_000)) % 10_000_000) for _ in range(n)]
        verts = self.model(np.stack([self._phenotypes(o) for o in others]), self.poses(n, rng)).vertices
        # directions on the ground: the camera's right and its forward
        right = np.array([camera.R[0, 0], camera.R[0, 1], 0.0])
        fwd = np.array([camera.R[2, 0], camera.R[2, 1], 0.0])
        right /= max(np.linalg.norm(right), 1e-9)
        fwd /= max(np.linalg.norm(fwd), 1e-9)
        placed = [main[::17]]
        out = []
        side = 1.0 if rng.random() < 0.5 else -1.0
        for k in range(n):
            v = self._grounded(verts[k])
            lateral, depth = rng.uniform(0.35, 0.8), rng.uniform(-1.2, 1.2)
            for _ in range(20):  # slide sideways until nobody touches (5 cm clearance)
                shift = (side * lateral * right + depth * fwd).astype(np.float32)
                tree = cKDTree(v[::17] + shift)
                if all(tree.query(p, distance_upper_bound=0.05)[0].min() == np.inf for p in placed):
                    break
                lateral += 0.12
            v = v + shift
            placed.append(v[::17])
            out.append(self._dress(v, others[k]))
            side = -side
        return out

    # -- rendering --------------------------------------------------------------------------

    def _caster(self, people: list[_Person]) -> RayCaster:
        n = len(people)
        verts = np.concatenate([p.vertices for p in people])
        if n not in self._casters:
            nv = self.coords.num_vertices
            faces = np.concatenate([self.faces + k * nv for k in range(n)])
            self._casters[n] = RayCaster(verts, faces, bvh=False)  # pinhole rendering needs no BVH
        else:
            self._casters[n].update(verts)
        return self._casters[n]

    def _shade(self, frame: Frame, people: list[_Person], light: Lighting, background: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shaded image (H, W, 3) float in [0, 1], instance (H, W) int16 and truth arrays."""
        h, w = frame.face.shape
        nf = len(self.faces)
        face = frame.face.reshape(-1)
        bary = frame.bary.reshape(-1, 3)
        instance = np.where(face >= 0, face // nf, -1).astype(np.int16)
        local = np.where(face >= 0, face % nf, -1)
        img = background.reshape(-1, 3).astype(np.float32) / 255.0
        R = frame.camera.R
        light_cam = R @ np.asarray(light.direction)
        seen_normal = frame.normal.reshape(-1, 3)
        for k, person in enumerate(people):
            sel = np.flatnonzero(instance == k)
            if not len(sel):
                continue
            tri = self.faces[local[sel]]
            n = np.einsum("nk,nkd->nd", bary[sel], person.normals[tri]) @ R.T
            n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
            n *= np.where((n * seen_normal[sel]).sum(1) < 0, -1.0, 1.0)[:, None]  # face the camera
            pts = surface_points(self.coords, self.faces, local[sel], bary[sel])
            img[sel] = shade(albedo(person.look, self.coords, pts), n, light, light_cam)
        return img.reshape(h, w, 3), instance.reshape(h, w), local.reshape(h, w)

    def _compose(self, rng: np.random.Generator, frame: Frame, people: list[_Person], light: Lighting, bg: np.ndarray,
                 occlude: bool, jitter: float, ident: int, b: int, upper: bool) -> ImageView:  # fmt: skip
        """Shade, draw occluders (from ``rng``) and jitter colours; truth only where a person is seen."""
        size = frame.face.shape[0]
        img, instance, local = self._shade(frame, people, light, bg)
        rgb = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
        depth = frame.depth.astype(np.float32).copy()
        if occlude:
            rows, cols = np.nonzero(instance == 0)
            box = (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1) if len(rows) else None
            occ = sample_occluders(rng, size, box, max_cover=0.4, person=instance >= 0)
            rgb[occ.mask] = occ.rgb[occ.mask]
            instance[occ.mask] = -1
        if jitter > 0:
            rgb = colour_jitter(rgb, rng, jitter)
        m = instance >= 0
        depth[~m] = 0.0
        tf = -np.ones(m.shape, dtype=np.int32)
        tb = np.zeros(m.shape + (3,), dtype=np.float32)
        tv = -np.ones(m.shape, dtype=np.int32)
        if m.any():
            tf[m], tb[m], tv[m] = self.template.map_full_points(local[m], frame.bary[m])
        return ImageView(
            rgb=rgb, depth=depth, instance=instance, template_face=tf, template_bary=tb, template_vertex=tv,
            camera=frame.camera, identity=ident, body=b, people=len(people), upper_body=upper, occluded=occlude,
        )  # fmt: skip

    def views_of_body(self, b: int) -> list[ImageView]:
        """The ``views_per_body`` views of posed body ``b``."""
        if b < 0:
            raise BodycorrError(f"body index {b}: must be >= 0.")
        cfg = self.config
        verts, _, ident = self.body(b)
        main = self._dress(verts, ident)
        rng = identity_rng(self.split, b, self.seed + _VIEW_STREAM)
        out = []
        for _ in range(cfg.views_per_body):
            # separate streams, so turning one option on or off leaves the rest of the view as it was
            scene, crowd_rng, look_rng, post_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**63, 4))
            crowd = scene.random() < cfg.multi_person_share
            upper = scene.random() < cfg.upper_body_share
            occlude = scene.random() < cfg.occluder_share
            frame_pts = main.vertices[self._upper] if upper else main.vertices
            centre = 0.5 * (frame_pts.min(0) + frame_pts.max(0))
            cam = random_camera(scene, Intrinsics.square(cfg.size), centre, cfg.distance_range, cfg.elevation_deg)
            cam = Camera(crop_intrinsics(frame_pts, cam, cfg.size, scene.uniform(*cfg.fill), scene), cam.R, cam.t)
            people = [main] + (self._extras(crowd_rng, main.vertices, ident, cam) if crowd else [])
            frame = render(self._caster(people), cam, "pinhole")
            light, bg = sample_lighting(look_rng), sample_background(look_rng, cfg.size)
            out.append(self._compose(post_rng, frame, people, light, bg, occlude, cfg.colour_jitter, ident, b, upper))
        return out

    def view(self, i: int) -> ImageView:
        """View ``i`` of the split (renders its whole body: prefer :meth:`views_of_body` in loops)."""
        return self.views_of_body(i // self.config.views_per_body)[i % self.config.views_per_body]

    def sequence(self, num_frames: int, index: int = 0, motion: Literal["keys", "walk"] = "keys", fps: float = 30) -> list[ImageView]:
        """One person (identity ``index``: its appearance and shape) under smooth motion, fixed camera.

        ``motion`` "keys": eased moves between sampled key poses
        (:func:`~bodycorr.body.motion.key_pose_sequence`); "walk": Anny's walk cycle in place
        (:func:`~bodycorr.body.motion.walk_cycle`) with a random heading. The camera frames the
        whole motion; light and background stay fixed; no occluders, extra people or jitter.
        ``ImageView.body`` is the frame number.
        """
        from bodycorr.body import rom
        from bodycorr.body.motion import key_pose_sequence, walk_cycle
        from bodycorr.body.pose import Pose, PoseSampler, PoseSamplerConfig

        if num_frames < 1 or num_frames > 100_000:
            raise BodycorrError(f"sequence: num_frames must be between 1 and 100000, got {num_frames}.")
        if motion not in ("keys", "walk"):
            raise BodycorrError(f"sequence: motion {motion!r} is unknown. Choose 'keys' or 'walk'.")
        if not fps > 0:
            raise BodycorrError(f"sequence: fps must be positive, got {fps}.")
        cfg = self.config
        rng = identity_rng(self.split, index, self.seed + _SEQ_STREAM)
        if motion == "keys":
            pose = key_pose_sequence(PoseSampler(PoseSamplerConfig(), model=self.model), num_frames, fps, rng=rng)
        else:
            walk = walk_cycle(num_frames, fps, self.model, start_frame=float(rng.uniform(0, 40)))
            Rz = rom.rotvec_to_matrix(np.array([0.0, 0.0, rng.uniform(0, 2 * np.pi)]))
            pose = Pose(walk.angles, Rz @ walk.global_rotation, walk.translation @ Rz.T, walk.sources)
        phen = self._phenotypes(index)
        anny = pose.to_anny(self.model)
        verts = np.concatenate([self.model(np.repeat(phen[None], len(anny[i : i + 16]), 0), anny[i : i + 16]).vertices
                                for i in range(0, num_frames, 16)])  # fmt: skip
        every = verts[:, ::7].reshape(-1, 3)
        verts = verts - np.array([*every[:, :2].mean(0), every[:, 2].min()], dtype=np.float32)
        people = [self._dress(v, index) for v in verts]
        allpts = np.concatenate([p.vertices[::7] for p in people])
        centre = 0.5 * (allpts.min(0) + allpts.max(0))
        cam = random_camera(rng, Intrinsics.square(cfg.size), centre, cfg.distance_range, cfg.elevation_deg, target_jitter=0.0)
        cam = Camera(crop_intrinsics(allpts, cam, cfg.size, cfg.fill[1]), cam.R, cam.t)
        light = sample_lighting(rng)
        bg = sample_background(rng, cfg.size)  # a static scene: the same background every frame
        return [self._compose(rng, render(self._caster([p]), cam, "pinhole"), [p], light, bg, False, 0.0, index, k, False)
                for k, p in enumerate(people)]  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Shards.
# ------------------------------------------------------------------------------------------------

_IMAGE_KEYS = ("rgb", "depth", "instance", "template_vertex", "template_face", "template_bary", "K", "R", "t",
               "identity", "body", "people", "upper_body", "occluded")  # fmt: skip


def pack_image_views(views: list[ImageView]) -> dict[str, np.ndarray]:
    """Stack views into shard arrays (rgb uint8, instance int8, vertex int16, bary float16)."""
    k = [v.camera.intrinsics for v in views]
    return {
        "rgb": np.stack([v.rgb for v in views]).astype(np.uint8),
        "depth": np.stack([v.depth for v in views]).astype(np.float32),
        "instance": np.stack([v.instance for v in views]).astype(np.int8),
        "template_vertex": np.stack([v.template_vertex for v in views]).astype(np.int16),
        "template_face": np.stack([v.template_face for v in views]).astype(np.int32),
        "template_bary": np.stack([v.template_bary for v in views]).astype(np.float16),
        "K": np.array([[i.fx, i.fy, i.cx, i.cy] for i in k], dtype=np.float64),
        "R": np.stack([v.camera.R for v in views]),
        "t": np.stack([v.camera.t for v in views]),
        "identity": np.array([v.identity for v in views], dtype=np.int64),
        "body": np.array([v.body for v in views], dtype=np.int64),
        "people": np.array([v.people for v in views], dtype=np.int64),
        "upper_body": np.array([v.upper_body for v in views], dtype=bool),
        "occluded": np.array([v.occluded for v in views], dtype=bool),
    }


def image_shard_is_valid(path: str | Path) -> bool:
    """A shard counts as written only if it is a complete, readable npz with every image key."""
    return shard_is_valid(Path(path), _IMAGE_KEYS)


def load_image_shard(path: str | Path) -> dict[str, np.ndarray]:
    """Load an image shard's arrays; a corrupt file raises one line naming it."""
    p = Path(path)
    if not image_shard_is_valid(p):
        raise BodycorrError(f"image shard {p}: incomplete or corrupt. Delete it and rerun generate_image_shards to remake it.")
    with np.load(p) as z:
        return {k: z[k] for k in z.files}


def generate_image_shards(
    config: ImageConfig,
    split: Split,
    count: int,
    seed: int,
    out_dir: str | Path,
    shard_size: int = 64,
    progress: bool = True,
) -> Path:
    """Write ``count`` views of ``split`` as shards under ``out_dir/split``; rerunning continues.

    The same (config, split, seed) gives the same bytes. A missing or broken shard (an
    interrupted run) is (re)made, valid ones are kept; a folder made with other settings is
    refused. Returns the split folder (``meta.json`` and ``shard-*.npz``).
    """
    if count < 1:
        raise BodycorrError(f"generate_image_shards: count must be at least 1, got {count}.")
    if shard_size < 1:
        raise BodycorrError(f"generate_image_shards: shard_size must be at least 1, got {shard_size}.")
    folder = ensure_dir(Path(out_dir) / split)
    meta = {"kind": "rgb", "format": IMAGE_SHARD_FORMAT, "split": split, "seed": seed, "count": count,
            "shard_size": shard_size, "config": asdict(config)}  # fmt: skip
    meta_path = folder / "meta.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if {k: old.get(k) for k in meta} != json.loads(json.dumps(meta)):
            raise BodycorrError(f"generate_image_shards: {folder} holds shards made with other settings (see {meta_path}). Use another out_dir.")
    write_json_atomic(meta_path, meta)
    todo = [(i, first) for i, first in enumerate(range(0, count, shard_size)) if not image_shard_is_valid(folder / shard_name(i))]
    if not todo:
        return folder
    gen = ImageViewGenerator(config, split, seed)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"{split} image shards", unit="shard")
    for index, first in todo:
        views = collect_views(gen, first, min(shard_size, count - first))
        save_npz_atomic(folder / shard_name(index), **pack_image_views(views))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return folder


def image_item(rgb: np.ndarray, template_vertex: np.ndarray, instance: np.ndarray, depth: np.ndarray) -> dict[str, torch.Tensor]:
    """A training item: ``rgb`` (3, H, W) float32 in [0, 1], ``template_vertex`` (H, W) int64
    (-1 = no truth), ``instance`` (H, W) int64 (-1 background/occluder, 0 main person) and
    ``depth`` (1, H, W) float32 metres."""
    return {
        "rgb": torch.from_numpy(np.ascontiguousarray(np.moveaxis(rgb, -1, 0), dtype=np.float32) / 255.0),
        "template_vertex": torch.from_numpy(np.ascontiguousarray(template_vertex, dtype=np.int64)),
        "instance": torch.from_numpy(np.ascontiguousarray(instance, dtype=np.int64)),
        "depth": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None],
    }


class ImageShardDataset(ShardFiles):
    """RGB views stored by :func:`generate_image_shards` in ``folder`` (one split)."""

    def __init__(self, folder: str | Path):
        super().__init__(folder, f"image dataset {Path(folder)}: no shards found. Run generate_image_shards(...) first.")

    def _check(self, path: Path) -> None:
        if not image_shard_is_valid(path):
            raise BodycorrError(f"image shard {path}: incomplete or corrupt, or not an RGB shard. Delete it and regenerate.")

    def _load(self, path: Path) -> dict[str, np.ndarray]:
        return load_image_shard(path)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"image dataset index {i} out of range for {len(self)} views")
        s, j = self._row(i % len(self))
        return image_item(s["rgb"][j], s["template_vertex"][j], s["instance"][j], s["depth"][j])
