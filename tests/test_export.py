"""ONNX export: every registered model (tiny) and the shipped depth model give the PyTorch inference's outputs in onnxruntime."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from bodycorr.cli.main import main  # noqa: E402
from bodycorr.common.errors import BodycorrError  # noqa: E402
from bodycorr.matching.describe import DEFAULT_MODEL  # noqa: E402
from bodycorr.matching.image import DEFAULT_IMAGE_MODEL  # noqa: E402
from bodycorr.models import create_model, list_models, model_task, tiny_overrides  # noqa: E402
from bodycorr.models.blocks import sincos_position_2d  # noqa: E402
from bodycorr.models.export import (  # noqa: E402
    TOLERANCE,
    _linspace_pm1,
    _position_code,
    example_input,
    export_onnx,
    reference_outputs,
    run_onnx,
)
from bodycorr.models.io import load_model_file  # noqa: E402

SIZES = [(64, 64), (75, 61)]  # odd, non-square: the U-Net's bottleneck has 3 x 2 cells, the ViT pads


def tiny(name: str):
    torch.manual_seed(0)
    return create_model(name, **tiny_overrides(name)).eval()


def _dynamic_axes(path) -> list[list[str]]:
    m = onnx.load(str(path))
    return [[d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim] for v in list(m.graph.input) + list(m.graph.output)]


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_matches_pytorch(name, tmp_path):
    net = tiny(name)
    kinds = [type(m) for m in net.modules()]
    # the image graph classifies every pixel here: a random tiny net's silhouette is ~0.5 everywhere
    rep = export_onnx(net, tmp_path / f"{name}.onnx", size=64, verify=False, foreground=None)
    assert rep.path.is_file() and rep.dynamic == "batch, height, width"
    axes = _dynamic_axes(rep.path)
    assert all(a[0] == "batch" and "height" in a and "width" in a for a in axes), axes
    for hw in SIZES:
        x = example_input(model_task(name), hw, batch=2, seed=7)
        ref = reference_outputs(net, x, foreground=None)
        got = run_onnx(rep.path, x)
        assert set(got) == set(ref)
        for k in ref:
            assert got[k].shape == ref[k].shape
            assert np.abs(got[k] - ref[k]).max() <= TOLERANCE[k], (name, hw, k, np.abs(got[k] - ref[k]).max())
    assert [type(m) for m in net.modules()] == kinds  # the export swapped a copy's GroupNorms, not the model's


def test_shipped_depth_model_via_the_cli(tmp_path, capsys):
    out = tmp_path / "sub" / "depth.onnx"
    assert main(["export", "--onnx", str(out)]) == 0  # default: the shipped depth model, checked at 128 and 141x109
    printed = capsys.readouterr().out
    assert "unet (depth)" in printed and "128x128: descriptors" in printed
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["bodycorr_task"] == "depth" and meta["working_size"] == "128"
    net = load_model_file(DEFAULT_MODEL)
    for hw in [(128, 128), (96, 200)]:
        x = example_input("depth", hw, batch=3, seed=2)
        x[1] = 0  # an empty view: no person, descriptors of the zero input
        d = np.abs(run_onnx(out, x)["descriptors"] - reference_outputs(net, x)["descriptors"]).max()
        assert d <= TOLERANCE["descriptors"], (hw, d)


def test_shipped_image_model_classifies_the_silhouette_only(tmp_path, capsys):
    out = tmp_path / "image.onnx"
    assert main(["export", "--onnx", str(out), "--model", "image"]) == 0  # checked at 128 and 141x109
    assert "bodymap_vit (surface)" in capsys.readouterr().out
    net = load_model_file(DEFAULT_IMAGE_MODEL)
    x = example_input("surface", (96, 120), batch=2, seed=5)
    ref, got = reference_outputs(net, x), run_onnx(out, x)
    share = (ref["confidence"] > 0).mean()
    assert 0.05 < share < 0.95  # the foreground gather and scatter are exercised
    assert ((got["confidence"] > 0) == (ref["confidence"] > 0)).all()
    for k in ref:
        assert np.abs(got[k] - ref[k]).max() <= TOLERANCE[k], k


def test_position_code_is_torch_bit_for_bit():
    for n in range(1, 300):
        assert torch.equal(_linspace_pm1(n), torch.linspace(-1.0, 1.0, n) if n > 1 else torch.zeros(1)), n
    for h, w in [(1, 1), (1, 5), (4, 4), (7, 3), (17, 16)]:
        assert torch.equal(_position_code(h, w, 192), sincos_position_2d(h, w, 192))


def test_bad_output_and_missing_extra(tmp_path, monkeypatch):
    net = tiny("unet")
    with pytest.raises(BodycorrError, match=r"\.onnx file"):
        export_onnx(net, tmp_path / "model.txt", verify=False)
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(BodycorrError, match="is a folder"):
        export_onnx(net, tmp_path / "dir.onnx", verify=False)
    with pytest.raises(BodycorrError, match="below the model's minimum"):
        export_onnx(net, tmp_path / "m.onnx", size=8, verify=False)
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(BodycorrError, match=r"bodycorr\[export\]"):
        export_onnx(net, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["export", "--ply", "{tmp}/o"], "result folder too"),
        (["export", "--onnx", "{tmp}/m.onnx", "{tmp}"], "unexpected argument"),
        (["export", "--onnx", "{tmp}/m.pt"], ".onnx file"),
        (["export", "--onnx", "{tmp}/m.onnx", "--model", "{tmp}/missing.pt"], "missing.pt"),
        (["export", "--ply", "{tmp}/o", "{tmp}/nope"], "no such folder"),
        (["export", "--ply", "{tmp}/o", "{tmp}"], "holds no bodycorr result"),
        (["export", "--ply", "{tmp}/o", "{tmp}", "--model", "image"], "belong to --onnx"),
    ],
)
def test_cli_errors_are_one_line(args, needle, tmp_path, capsys):
    code = main([a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("bodycorr: error:") and needle in err[0], err
