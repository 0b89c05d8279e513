"""A tool that tells the truth (#22): it fails before working, takes the meshes users have, never
mixes two runs in one folder, prints a short report (JSON on request) and no driver noise."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bodycorr.cli.main import main
from bodycorr.common.fileio import RUN_MARKER
from bodycorr.geometry.io import save_mesh
from bodycorr.geometry.mesh import Mesh
from bodycorr.models import create_model, tiny_overrides
from bodycorr.models.io import save_model_file

from tinyshapes import icosphere

BIN = Path(sys.executable).with_name("bodycorr")


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bodycorr: error: "), err
    return lines[0]


def _body(path: Path) -> Path:
    """A body-sized ellipsoid (642 vertices, 1.7 m tall) as a mesh file."""
    v, f = icosphere(3)
    save_mesh(Mesh(v * [0.25, 0.15, 0.85], f), path)
    return path


def _quad_body_obj(path: Path, n: int = 16) -> tuple[Path, int]:
    """A body-sized tube of quads, closed by two polygon caps: (file, how many polygon faces)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    rings = [np.stack([0.2 * np.cos(t), 0.12 * np.sin(t), np.full(n, z)], 1) for z in np.linspace(0, 1.7, 12)]
    v = np.concatenate(rings)
    quads = [[r * n + i, r * n + (i + 1) % n, (r + 1) * n + (i + 1) % n, (r + 1) * n + i] for r in range(11) for i in range(n)]
    caps = [list(range(n))[::-1], list(range(11 * n, 12 * n))]
    lines = [f"v {x:.5f} {y:.5f} {z:.5f}" for x, y, z in v] + ["f " + " ".join(str(i + 1) for i in q) for q in quads + caps]
    path.write_text("\n".join(lines) + "\n")
    return path, len(quads) + len(caps)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    save_model_file(create_model("unet", base_width=4, max_width=16, num_levels=3), d / "depth.pt", meta={"size": 32})
    save_model_file(create_model("bodymap_vit", **tiny_overrides("bodymap_vit")), d / "image.pt", include_heads=True,
                    meta={"size": 48, "code": "position"})  # fmt: skip
    _body(d / "body.ply")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(d / name)
    (d / "blocker").write_text("a regular file: nothing can be made under it")
    (d / "results.json").write_text("{}")
    (d / "run").mkdir()
    (d / "result").mkdir()
    return d


COMMANDS = {  # every command, its inputs valid, its output under a regular file
    "match": "match {d}/body.ply {d}/body.ply -o {bad}",
    "register": "register {d}/body.ply -o {bad}",
    "track": "track synthetic -o {bad}",
    "image": "image {d}/a.png -o {bad}",
    "benchmark": "benchmark -o {bad}",
    "benchmark-image": "benchmark-image -o {bad}",
    "demo": "demo -o {bad}",
    "transfer": "transfer {d}/a.png {d}/b.png -o {bad}",
    "generate": "generate --out {bad}",
    "generate-preview": "generate --preview {bad}/p.png",
    "train": "train --config depth-small --out {bad}",
    "release": "release --run {d}/run --results {d}/results.json --name ../outside",
    "export-onnx": "export --onnx {bad}/model.onnx",
    "export-ply": "export --ply {bad} {d}/result",
}


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_every_command_fails_before_working(cmd, files):
    """A path that cannot be written (under a regular file; tests run as root, so permission bits
    would not do) fails in under 2 s, the process's start included, with one line that names it."""
    args = COMMANDS[cmd].format(d=files, bad=files / "blocker" / "out").split()
    t0 = time.perf_counter()
    out = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - t0
    line = _one_line(out.stderr)
    assert out.returncode == 2 and seconds < 2.0, (seconds, line)
    assert ("blocker" in line and "is a file" in line) or ("--name" in line and "plain file name" in line), line
    assert not (files / "blocker").is_dir()


def test_a_missing_input_fails_before_the_model(files, capsys):
    """Inputs are checked before anything is loaded: the line names the file and no output folder is made."""
    out = files / "never"
    assert main(["match", str(files / "nope.obj"), str(files / "body.ply"), "-o", str(out)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "nope.obj" in line and "no such file" in line and not out.exists()


def test_quads_are_triangulated_and_a_rerun_leaves_no_stale_outputs(files, tmp_path, capsys):
    """An OBJ of quads and polygons is matched (fan-triangulated, and the summary says so); a rerun
    into a folder of an earlier run deletes that run's outputs first (the fitted templates of a
    refiner that fitted them), leaves other files alone and finishes without the run marker."""
    src, polygons = _quad_body_obj(tmp_path / "quads.obj")
    out = tmp_path / "out"
    out.mkdir()
    for stale in ("source_template.ply", "target_template.ply", "summary.json", "matches.png"):
        (out / stale).write_text("from an older run")
    (out / "notes.txt").write_text("the user's own file")
    args = ["match", str(src), str(files / "body.ply"), "-o", str(out), "--model", str(files / "depth.pt"), "--views", "4",
            "--up", "z", "--refine", "none"]  # fmt: skip
    assert main(args) == 0
    report = capsys.readouterr().out.strip()
    assert f"{polygons} polygon faces fan-triangulated" in report and report.count("\n") == 0 and not report.startswith("{")
    assert not (out / "source_template.ply").exists() and not (out / "target_template.ply").exists()
    assert not (out / RUN_MARKER).exists() and (out / "notes.txt").read_text() == "the user's own file"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source_info"] == {"triangulated": polygons} and summary["target_info"] == {}
    with np.load(out / "correspondences.npz") as z:
        assert len(z["target_index"]) == 12 * 16
    # --json: the summary itself, machine-readable
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("units", ["m", "auto"])
def test_a_one_vertex_mesh_is_one_line(tmp_path, capsys, units):
    (tmp_path / "one.obj").write_text("v 0 0 0\nf 1 1 1\n")
    assert main(["match", str(tmp_path / "one.obj"), str(tmp_path / "one.obj"), "--units", units, "-o", str(tmp_path / "o")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "one.obj" in line and ("only 1 vertex" in line or "fits no unit" in line)


def test_degenerate_scan_with_declared_units_is_one_line(tmp_path, capsys):
    v, f = icosphere(3)
    save_mesh(Mesh(v * 1e-4, f), tmp_path / "dot.ply")  # 0.2 mm across, read as metres
    assert main(["register", str(tmp_path / "dot.ply"), "--units", "m", "-o", str(tmp_path / "o")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "dot.ply" in line and "span only" in line and "--units" in line


def test_an_image_model_given_to_match_is_named(files, tmp_path, capsys):
    assert main(["match", str(files / "body.ply"), str(files / "body.ply"), "--model", str(files / "image.pt"), "-o", str(tmp_path / "o")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "image.pt" in line and "image model" in line and "bodycorr image" in line


def test_benchmark_image_without_model_uses_the_shipped_one(tmp_path, monkeypatch, capsys):
    """--help says the default is the shipped model: it must be that, not a TypeError."""
    from bodycorr.evaluation import surface
    from bodycorr.matching.image import DEFAULT_IMAGE_MODEL

    seen = []

    def fake_evaluate(path, cfg):
        seen.append(path)
        return {"model": str(path), "model_sha256": "0" * 64, "size": cfg.size, "images": cfg.images}

    monkeypatch.setattr(surface, "evaluate_surface_model", fake_evaluate)
    monkeypatch.setattr(surface, "_examples_png", lambda results, code, path: path.write_bytes(b"png"))
    assert main(["benchmark-image", "--images", "2", "--frames", "0", "-o", str(tmp_path / "bi")]) == 0
    assert seen == [str(DEFAULT_IMAGE_MODEL)]
    assert json.loads((tmp_path / "bi" / "results.json").read_text())["results"][0]["model"] == str(DEFAULT_IMAGE_MODEL)


def test_benchmark_checks_its_folder_before_the_pairs(tmp_path, monkeypatch):
    """Before, every pair was computed and then the results could not be written."""
    from bodycorr.common.errors import BodycorrError
    from bodycorr.evaluation import harness

    class Never:
        def __init__(self, *a, **k):
            raise AssertionError("the pairs ran before the output folder was checked")

    class Method:
        name = "m"

    monkeypatch.setattr(harness, "_Runner", Never)
    (tmp_path / "f").write_text("x")
    with pytest.raises(BodycorrError, match="is a file"):
        harness.run_benchmark(None, [Method()], harness.HarnessConfig(), tmp_path / "f" / "out")


def test_reports_are_short_lines_or_json(files, tmp_path, monkeypatch, capsys):
    """image, transfer and train print a sentence, not a Python dict; --json prints the summary."""
    import bodycorr.apps.transfer as transfer
    import bodycorr.training.loop as loop

    img = str(files / "a.png")
    assert main(["image", img, "-o", str(tmp_path / "i"), "--model", str(files / "image.pt")]) == 0
    text = capsys.readouterr().out.strip()
    assert text.count("\n") == 0 and "{" not in text and str(tmp_path / "i") in text
    assert main(["image", img, "-o", str(tmp_path / "i"), "--model", str(files / "image.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((tmp_path / "i" / "summary.json").read_text())

    res = {"source": img, "target": img, "source_pixels": 10, "target_pixels": 12, "texture_coverage": 0.25}
    monkeypatch.setattr(transfer, "run_transfer", lambda *a, **k: res)
    assert main(["transfer", img, img, "-o", str(tmp_path / "t")]) == 0
    text = capsys.readouterr().out.strip()
    assert "25 %" in text and "{" not in text
    assert main(["transfer", img, img, "-o", str(tmp_path / "t"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == res

    rec = {"step": 40, "time": 1.0, "lr": 0.001, "img_per_s": 3.2, "total": 1.23456, "val_mean_cm": 20.0, "val_median_cm": 10.0,
           "val_gross_pct": 30.0, "val_flip_pct": 40.0}  # fmt: skip
    monkeypatch.setattr(loop, "train", lambda cfg, out, resume=True: rec)
    assert main(["train", "--config", "depth-small", "--out", str(tmp_path / "run")]) == 0
    text = capsys.readouterr().out.strip()
    assert text.startswith("trained to step 40, loss 1.235, validation: mean 20.0 cm") and "{" not in text
    assert main(["train", "--config", "depth-small", "--out", str(tmp_path / "run"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 1.2346


def test_no_cuda_driver_warning_on_a_cpu_machine():
    """Warp's native CUDA probe warns on stderr wherever there is no driver; the ray caster and the
    body model start Warp without it (other stderr output is kept)."""
    code = ("import os, sys; from bodycorr.render.raycast import _warp; _warp(); "
            "from bodycorr.common.quiet import filtered_stderr\n"
            "with filtered_stderr(('noise',)):\n    os.write(2, b'noise line\\nkept line\\n')")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "CUDA driver" not in out.stderr and "Warp" not in out.stdout
    assert out.stderr.strip().splitlines() == ["kept line"]


def test_image_strict_refuses_a_photo_that_is_not_a_person(files, tmp_path, capsys):
    """Without --strict a non-person silhouette is a warning; with it, one line and no outputs."""
    img, model = str(files / "a.png"), str(files / "image.pt")
    assert main(["image", img, "-o", str(tmp_path / "warn"), "--model", model]) == 0
    assert "does not look like a person" in capsys.readouterr().err
    assert main(["image", img, "-o", str(tmp_path / "strict"), "--model", model, "--strict"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "a.png" in line and "--strict" in line
    assert not (tmp_path / "strict" / "summary.json").exists()
