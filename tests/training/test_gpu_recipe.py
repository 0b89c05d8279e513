"""The GPU recipe at a tiny size on the CPU: the pack, views made on the device, and the train entry
run as on the device machine (no Anny, warp or other packages missing there), resumed, its model loaded."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from bodycorr.common.errors import BodycorrError
from bodycorr.data.packed_views import DeviceViews, PackedBodies, crop_cameras, look_at
from bodycorr.data.views import ViewConfig, crop_intrinsics
from bodycorr.geometry.camera import Camera, Intrinsics
from bodycorr.models.inputs import foreground_median
from bodycorr.training.config import load_config
from bodycorr.training.gpu_recipe import GpuRunConfig, check_pack_fits, load_pack, train_on_device, write_pack
from bodycorr.training.loop import sample_pixels_batched
from bodycorr.training.targets import Targets
from tinyshapes import icosphere

# Python packages this project uses that the device machine does not have (see docs/gpu_recipe.md)
NOT_ON_DEVICE = ("anny", "warp", "trimesh", "potpourri3d", "robust_laplacian", "gpytoolbox", "viser", "roma", "faiss", "pygeodesic", "pyFM")
ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "model": "unet", "model_args": {"base_width": 4, "max_width": 16, "num_levels": 3, "chirality_head": True},
    "view": {"size": 32, "noise": "mixed"},
    "targets": {"num_segmentations": 0, "parts_task": False, "dense_points": 12, "dense_sigma": 0.05},
    "batch_size": 2, "lr": 0.002, "warmup_steps": 2, "schedule": "constant", "pixels_per_image": 32, "log_every": 1,
    "seg_weight": 0.0, "dense_weight": 1.0, "keypoint_weight": 0.0, "parts_weight": 0.0, "chirality_weight": 1.0, "threads": 1,
}  # fmt: skip


def _bodies(n: int, seed: int) -> np.ndarray:
    """(n, V, 3) person-sized ellipsoids standing on z = 0, each bumped and scaled its own way."""
    v, _ = icosphere(2)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = v * np.array([0.3, 0.18, 0.85]) * rng.uniform(0.9, 1.1, 3) * (1 + 0.05 * rng.random((len(v), 1)))
        out.append(w - [0, 0, w[:, 2].min()])
    return np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny config (JSON) and a pack for it built from ellipsoids (no Anny)."""
    d = tmp_path_factory.mktemp("gpu")
    cfg_path = d / "gpu-tiny.json"
    cfg_path.write_text(json.dumps(TINY))
    cfg = load_config(str(cfg_path))
    _, faces = icosphere(2)
    rest = _bodies(1, 99)[0]
    nv = len(rest)
    dense = np.linspace(0, nv - 1, 12).astype(np.int64)
    geo = np.linalg.norm(rest[:, None] - rest[dense][None], axis=2).astype(np.float16)  # Euclidean stands in for geodesics
    targets = Targets(segmentations=np.zeros((0, nv), np.int64), keypoints=np.zeros(nv, np.int64), num_landmarks=1,
                      dense_vertices=dense, dense_geodesic=geo)  # fmt: skip
    sides = (np.sign(rest[:, 0]) * (np.abs(rest[:, 0]) > 0.05)).astype(np.int8)
    symmetry = cKDTree(rest).query(rest * [-1, 1, 1])[1]

    def packed(n, seed):
        return PackedBodies.encode(_bodies(n, seed), np.full((n, 6), 0.5), np.arange(n) // 2, np.arange(n))

    pack = write_pack(d / "pack.npz", packed(6, 0), packed(2, 1), faces, np.arange(nv), sides, symmetry, targets,
                      dataclasses.asdict(cfg.targets), cfg.targets.dense_sigma, {"test": True})  # fmt: skip
    return cfg_path, cfg, pack


def _train_as_on_device(cfg_path: Path, pack: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """Run the train entry in a fresh interpreter in which the packages missing on the device cannot be imported."""
    runner = (
        "import importlib.abc, sys\n"
        "BLOCKED = set(sys.argv[1].split(','))\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(name + ' is not on the device machine')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from bodycorr.training.gpu_recipe import main\n"
        "code = main(sys.argv[2:])\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in BLOCKED]\n"
        "sys.exit(code)\n"
    )
    args = ["train", "--pack", str(pack), "--out", str(out), "--config", str(cfg_path), "--minutes", "3", "--device", "cpu",
            "--time-size", "32", "--time-iters", "2", "--val-views", "2", "--quiet", *extra]  # fmt: skip
    return subprocess.run([sys.executable, "-c", runner, ",".join(NOT_ON_DEVICE), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_train_entry_runs_without_device_missing_packages_resumes_and_loads(tiny, tmp_path):
    from bodycorr.matching.describe import load_extractor
    from bodycorr.models.io import load_model_file, read_torch_file

    cfg_path, cfg, pack = tiny
    out = tmp_path / "run"
    r = _train_as_on_device(cfg_path, pack, out, "--max-steps", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert {p.name for p in out.iterdir()} >= {"last.pt", "optim.pt", "model.pt", "log.jsonl", "summary.json"}
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 3]  # the last with validation
    r = _train_as_on_device(cfg_path, pack, out, "--max-steps", "5")
    assert r.returncode == 0, r.stderr[-2000:]
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = [x["step"] for x in log]
    assert steps == [1, 2, 3, 3, 4, 5, 5]  # resumed at 3 (its validation record kept), then steps 4 and 5
    assert log[-1]["images"] == 10 and "val_dense" in log[-1] and np.isfinite(log[-1]["total"])
    assert all(k in log[0] for k in ("wall_s", "train_s", "img_per_s", "dense", "chirality", "lr"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["start_step"] == 3 and summary["steps"] == 5 and summary["this_run"]["steps"] == 2
    assert summary["extraction"]["fp32_forward_ms"] > 0 and summary["extraction"]["size"] == 32 and summary["views_per_s"] > 0
    state = read_torch_file(out / "last.pt")
    assert state["step"] == 5 and state["extras"]["images"] == 10
    # the project's loaders take the result as they take `bodycorr train`'s
    net = load_model_file(out / "model.pt")
    full = load_model_file(out / "last.pt")
    assert net.heads is None and full.heads is not None and full.heads.chirality is not None
    x = torch.zeros(1, 2, 32, 32)
    x[:, :, 8:24, 12:20] = 1.0
    d = net(x)
    assert d.shape == (1, 16, 32, 32) and torch.allclose(d.norm(dim=1), torch.ones(1, 32, 32), atol=1e-4)
    assert torch.allclose(d, full(x), atol=5e-3)  # the half-precision inference file holds the same weights
    assert load_extractor(str(out / "model.pt")).size == 32


def test_resume_refuses_another_batch_size(tiny, tmp_path):
    cfg_path, cfg, pack = tiny
    out = tmp_path / "run"
    run = GpuRunConfig(minutes=2, max_steps=1, time_iters=0, val_views=0, device="cpu", snapshots=0)
    train_on_device(pack, out, cfg, run, progress=False)
    with pytest.raises(BodycorrError, match="different config or batch size"):
        train_on_device(pack, out, cfg, dataclasses.replace(run, batch_size=3, max_steps=2), progress=False)


def test_pack_round_trip_and_refusals(tiny, tmp_path):
    cfg_path, cfg, pack_path = tiny
    p = load_pack(pack_path)
    assert len(p.train) == 6 and len(p.val) == 2 and p.dense_geodesic_t.shape == (12, 162)
    assert float(p.dense_geodesic_t.max()) <= p.dense_clamp_m + 1e-3 and p.dense_clamp_m == pytest.approx(9 * 0.05)
    check_pack_fits(p, cfg)
    other = cfg.replace(targets=dataclasses.replace(cfg.targets, dense_points=24))
    with pytest.raises(BodycorrError, match="differ in dense_points"):
        check_pack_fits(p, other)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(BodycorrError, match="cannot be read"):
        load_pack(bad)


def test_packed_bodies_keep_vertices_to_half_a_step():
    v = _bodies(3, 5) + np.array([0.0, 0.0, 0.0], np.float32)
    v[1] += [3.0, -2.0, 0.5]  # anywhere in the world
    packed = PackedBodies.encode(v, np.zeros((3, 6)), np.arange(3), np.arange(3), step=0.00025)
    back = packed.vertices().numpy()
    assert back.shape == v.shape and np.abs(back - v).max() <= 0.000125 + 1e-6
    assert packed.lo.dtype == np.uint8 and packed.lo.shape == (3, 3, v.shape[1])
    with pytest.raises(BodycorrError, match="spans"):
        PackedBodies.encode(np.array([[[0, 0, 0], [9.0, 0, 0]]]), np.zeros((1, 6)), [0], [0])


def test_cameras_are_the_view_generators(rng):
    verts = _bodies(4, 3).astype(np.float64)
    eye = rng.normal(size=(4, 3)) * 2 + [0, -3, 1]
    tgt = rng.normal(size=(4, 3)) * 0.1 + [0, 0, 0.9]
    up = np.array([[0.05, 0.0, 1.0]] * 4)
    R, t = look_at(*(torch.from_numpy(a) for a in (eye, tgt, up)))
    fill = rng.uniform(0.7, 0.95, 4)
    shift_rngs = [np.random.default_rng(k) for k in range(4)]
    shifts = np.stack([np.random.default_rng(k).uniform(-1, 1, 2) for k in range(4)])
    cams = crop_cameras(torch.from_numpy(verts), R, t, 64, torch.from_numpy(fill), torch.from_numpy(shifts))
    for i in range(4):
        ref = Camera.look_at(eye[i], tgt[i], up[i], Intrinsics.square(64))
        assert np.allclose(R[i].numpy(), ref.R, atol=1e-12) and np.allclose(t[i].numpy(), ref.t, atol=1e-12)
        k = crop_intrinsics(verts[i], ref, 64, fill[i], shift_rngs[i])
        got = [float(x[i]) for x in (cams.fx, cams.fy, cams.cx, cams.cy)]
        assert np.allclose(got, [k.fx, k.fy, k.cx, k.cy], rtol=1e-5)


def test_device_views_frame_the_body_with_truth(tiny):
    cfg_path, cfg, pack_path = tiny
    p = load_pack(pack_path)
    views = DeviceViews(p.train.vertices(), p.faces, p.full_to_template, cfg.view)
    batch = views.sample(16, torch.Generator().manual_seed(0))
    depth, vertex = batch["depth"][:, 0], batch["vertex"]
    assert depth.shape == (16, 32, 32) and vertex.shape == (16, 32, 32) and vertex.dtype == torch.int64
    assert ((vertex >= 0) <= (depth > 0)).all() and int(vertex.max()) < 162  # truth only where there is depth
    assert 2 <= int(batch["noisy"].sum()) <= 14  # "mixed": about half the views noisy
    for i in range(16):
        rows, cols = torch.nonzero(vertex[i] >= 0, as_tuple=True)
        extent = max(int(rows.max() - rows.min()), int(cols.max() - cols.min())) + 1
        assert 0.55 * 32 <= extent <= 32  # the body fills 70-95 % of the crop (noise may eat its edge)
    clean = ~batch["noisy"]
    assert torch.equal((depth[clean] > 0), (vertex[clean] >= 0))
    with pytest.raises(BodycorrError, match="framing"):
        DeviceViews(p.train.vertices(), p.faces, p.full_to_template, ViewConfig(size=32, framing="sensor")).sample(1, torch.Generator())


def test_batched_pixel_sampler_draws_distinct_pixels_with_truth():
    g = torch.Generator().manual_seed(0)
    vertex = torch.full((3, 8, 8), -1, dtype=torch.long)
    vertex[0, 2:6, 2:6] = 7  # 16 pixels
    vertex[2, 0, :5] = 3  # 5 pixels; image 1 has none
    pix, img = sample_pixels_batched(vertex, 10, g)
    assert img.tolist() == [0] * 10 + [2] * 5
    assert len(set(pix.tolist())) == 15 and (vertex.reshape(-1)[pix] >= 0).all()
    # uniform over an image's pixels
    counts = torch.zeros(64)
    for _ in range(400):
        p, i = sample_pixels_batched(vertex[:1], 4, g)
        counts += torch.bincount(p, minlength=64).float()
    hits = counts[vertex[0].reshape(-1) >= 0]
    assert hits.min() > 50 and hits.max() < 150 and counts.sum() == 1600


def test_batched_median_is_the_per_image_median():
    g = torch.Generator().manual_seed(1)
    depth = torch.rand(5, 7, 9, generator=g) * 3
    valid = torch.rand(5, 7, 9, generator=g) > 0.5
    valid[1] = False  # no pixel: 0
    valid[2] = False
    valid[2, 0, :4] = True  # an even count: the lower middle value, as torch.median
    med = foreground_median(depth, valid)
    for i in range(5):
        v = depth[i][valid[i]]
        assert med[i] == (v.median() if v.numel() else 0.0)


@pytest.mark.slow
def test_an_anny_pack_renders_as_the_view_generator(tmp_path):
    """A pack of real bodies: the decoded vertices are the generator's, and a body rendered on
    the device through the generator's camera has the generator's per-pixel truth."""
    from bodycorr.data.views import ViewGenerator
    from bodycorr.render.frame import render
    from bodycorr.render.raycast import RayCaster
    from bodycorr.render.torch_raster import PinholeCameras, rasterize
    from bodycorr.render.truth import body_truth
    from bodycorr.training.gpu_recipe import build_pack

    base = load_config("depth-tiny").replace(seg_weight=0.0, dense_weight=1.0, keypoint_weight=0.0, parts_weight=0.0)
    cfg = base.replace(targets=dataclasses.replace(base.targets, num_segmentations=0, parts_task=False, dense_points=24, dense_sigma=0.05))
    info = build_pack(cfg, tmp_path / "pack.npz", bodies=3, val_bodies=1)
    assert info["bodies"] == 3 and info["identities"] == 2  # depth-tiny: 2 poses per identity
    p = load_pack(tmp_path / "pack.npz")
    gen = ViewGenerator(cfg.view, "train", cfg.seed)
    got = p.train.vertices().numpy()
    for b in range(3):
        assert np.abs(got[b] - gen.body(b)[0]).max() < 0.00013
    vgen = ViewGenerator(cfg.view, "val", cfg.seed)
    assert np.abs(p.val.vertices().numpy()[0] - vgen.body(0)[0]).max() < 0.00013
    assert p.sides.shape == p.symmetry.shape == (gen.template.num_vertices,) and p.dense_geodesic_t.shape == (24, gen.template.num_vertices)
    # one of the generator's views of body 1, made again on the device
    view = gen.views_of_body(1)[0]
    cam = Camera(view.camera.intrinsics.scaled(128), view.camera.R, view.camera.t)  # the same view, larger
    caster = RayCaster(gen.body(1)[0], gen.model.faces, bvh=False)
    frame = render(caster, cam, "pinhole")
    truth = body_truth(frame, gen.template)
    frames = rasterize(torch.from_numpy(got[1]), torch.from_numpy(p.faces), PinholeCameras.from_cameras([cam]))
    corner = frames.bary[0].argmax(-1)
    face = frames.face[0]
    tv = torch.where(face >= 0, torch.from_numpy(p.full_to_template).long()[torch.from_numpy(p.faces).long()[face.clamp(min=0), corner]], -1)
    seen = truth.template_vertex >= 0
    assert seen.sum() > 1500
    assert (tv.numpy() == truth.template_vertex).mean() > 0.995
    err = np.abs(frames.depth[0].numpy() - frame.depth)[seen & (face.numpy() >= 0)]
    assert np.median(err) < 2e-4 and (err < 1e-3).mean() > 0.99  # vertices kept to 0.125 mm (more at grazing angles)


@pytest.mark.slow
def test_adopt_brings_a_device_run_home_with_the_cpu_loops_validation(tiny, tmp_path):
    from bodycorr.training.gpu_recipe import adopt_run

    cfg_path, cfg, pack = tiny
    came_back = tmp_path / "out" / "run"
    train_on_device(pack, came_back, cfg, GpuRunConfig(minutes=2, max_steps=2, time_iters=0, val_views=0, device="cpu", snapshots=0),
                    progress=False)  # fmt: skip
    info = adopt_run(came_back, tmp_path / "runs" / "gpu-tiny")
    run = tmp_path / "runs" / "gpu-tiny"
    assert info["step"] == 2 and set(info["files"]) >= {"last.pt", "model.pt", "log.jsonl"}
    assert json.loads((run / "config.json").read_text())["batch_size"] == 2
    last = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 2 and last["val_mean_cm"] > 0 and "val_flip_pct" in last
    with pytest.raises(BodycorrError, match="not empty"):
        adopt_run(came_back, run.parent)
