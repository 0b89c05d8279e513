"""Descriptor networks, heads and registry: every registered model at a tiny size."""

from __future__ import annotations

import io
import json
from dataclasses import FrozenInstanceError, asdict

import pytest
import torch
import torch.nn.functional as F

from bodycorr.common.errors import BodycorrError
from bodycorr.models import (
    CosineClassifier,
    MultiTaskHeads,
    checkpoint_dict,
    create_model,
    list_models,
    model_from_checkpoint_dict,
    tiny_overrides,
)
from bodycorr.models.blocks import upsample_aligned

MODELS = list_models("depth")
SIZES = [(64, 64), (96, 80), (100, 84)]


def tiny(name: str, **kw):
    torch.manual_seed(0)
    return create_model(name, **{**tiny_overrides(name), **kw})


def batch(h: int, w: int, b: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, 1, h, w)
    mask[:, :, h // 6 : h - h // 6, w // 4 : w - w // 4] = 1
    depth = 0.2 * torch.randn(b, 1, h, w, generator=g)
    return torch.cat([depth * mask, mask], dim=1)  # [normalised depth, mask]


def test_registry_lists_both_architectures():
    assert {"wei_alexnet", "unet"} <= set(MODELS)
    assert MODELS == sorted(MODELS)
    assert set(MODELS) <= set(list_models())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("hw", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_shape_and_unit_norm(name, hw):
    net = tiny(name).eval()
    with torch.no_grad():
        y = net(batch(*hw))
    assert y.shape == (2, net.descriptor_dim, *hw)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.norm(dim=1), torch.ones(2, *hw), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_model_attributes(name):
    net = tiny(name, descriptor_dim=8)
    assert net.model_name == name
    assert net.descriptor_dim == 8 == net.config.descriptor_dim
    with pytest.raises(FrozenInstanceError):
        net.config.descriptor_dim = 3


@pytest.mark.parametrize("name", MODELS)
def test_gradients_flow(name):
    net = tiny(name).train()
    x = batch(96, 80).requires_grad_(True)
    desc = net(x)
    # Train like the trainer: gather foreground pixels, classify them with the heads.
    fg = x[:, 1].detach().bool()
    pix = desc.permute(0, 2, 3, 1)[fg]  # (N, D)
    n = pix.shape[0]
    task = torch.arange(n) % net.config.num_segmentations
    seg_loss = F.cross_entropy(net.heads.logits(pix, task), torch.arange(n) % net.config.num_patches)
    kp_loss = F.cross_entropy(net.heads.keypoint_logits(pix), torch.arange(n) % (net.config.num_keypoints + 1))
    (seg_loss + kp_loss).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
    first = next(p for p in net.backbone.parameters() if p.ndim == 4)
    assert first.grad.abs().sum() > 0
    assert net.heads.weight.grad.abs().sum() > 0
    assert net.heads.keypoint.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_deterministic_in_eval(name):
    net = tiny(name).eval()
    x = batch(100, 84)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_round_trip(name):
    net = tiny(name).eval()
    # Perturb every parameter so a default-initialised model cannot pass by accident.
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x = batch(96, 80)
    d = checkpoint_dict(net)
    assert set(d) == {"name", "config", "state_dict"} and d["name"] == name
    json.loads(json.dumps(d["config"]))  # config is plain JSON data
    buf = io.BytesIO()
    torch.save(d, buf)
    buf.seek(0)
    again = model_from_checkpoint_dict(torch.load(buf, weights_only=True))
    assert again.config == net.config and again.model_name == name
    with torch.no_grad():
        assert torch.equal(again(x), net(x))
    for k, v in again.state_dict().items():
        assert torch.equal(v, net.state_dict()[k]), k


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_without_heads_and_fp16(name):
    net = tiny(name).eval()
    x = batch(64, 64)
    d = checkpoint_dict(net, include_heads=False)
    assert not any(k.startswith("heads.") for k in d["state_dict"])
    slim = model_from_checkpoint_dict(d)
    assert slim.heads is None
    with torch.no_grad():
        assert torch.equal(slim(x), net(x))
    d16 = {**d, "state_dict": {k: v.half() if v.is_floating_point() else v for k, v in d["state_dict"].items()}}
    half = model_from_checkpoint_dict(d16)
    with torch.no_grad():
        cos = (half(x) * net(x)).sum(dim=1)
    assert cos.min() > 0.99


def test_checkpoint_errors():
    net = tiny("unet")
    d = checkpoint_dict(net)
    with pytest.raises(BodycorrError, match="expected keys"):
        model_from_checkpoint_dict({"name": "unet"})
    with pytest.raises(BodycorrError, match="unknown name"):
        model_from_checkpoint_dict({**d, "name": "nope"})
    with pytest.raises(BodycorrError, match="do not match"):
        model_from_checkpoint_dict({**d, "config": {**d["config"], "base_width": 8}})


def test_unknown_name_lists_known_models():
    with pytest.raises(BodycorrError) as e:
        create_model("resnet_9000")
    msg = str(e.value)
    assert "resnet_9000" in msg and all(n in msg for n in MODELS) and "\n" not in msg


@pytest.mark.parametrize("name", MODELS)
def test_bad_options(name):
    with pytest.raises(BodycorrError, match="unknown option.*descriptor_dim"):
        create_model(name, no_such_option=1)
    with pytest.raises(BodycorrError, match="norm"):
        create_model(name, norm="layer")
    with pytest.raises(BodycorrError, match="descriptor_dim"):
        create_model(name, descriptor_dim=0)
    with pytest.raises(BodycorrError, match="integer"):
        create_model(name, descriptor_dim=2.5)


def test_config_literals_and_optionals():
    assert create_model("wei_alexnet", **{**tiny_overrides("wei_alexnet"), "fc_width": None}).config.fc_width is None
    with pytest.raises(BodycorrError, match="output_stride"):
        create_model("wei_alexnet", output_stride=2)
    with pytest.raises(BodycorrError, match="stem_stride"):
        create_model("unet", stem_stride=True)
    with pytest.raises(BodycorrError, match="attention_heads"):
        create_model("unet", base_width=4, max_width=6, num_levels=2)


@pytest.mark.parametrize("name", MODELS)
def test_wrong_input_shape(name):
    net = tiny(name)
    good = batch(64, 64)
    bad_inputs = [
        good[:, :1],  # depth only, no mask channel
        good[0],  # no batch axis
        good[:, :, :8, :8],  # smaller than min_size
        good.long(),  # not float
    ]
    for x in bad_inputs:
        with pytest.raises(BodycorrError, match=r"\(B, 2, H, W\)") as e:
            net(x)
        assert "\n" not in str(e.value)


def test_unet_context_variants_and_stem_strides():
    x = batch(100, 84)
    for kw in ({"global_context": "pool"}, {"global_context": "none"}, {"stem_stride": 1}, {"stem_stride": 4}):
        net = tiny("unet", **kw).eval()
        with torch.no_grad():
            assert net(x).shape == (2, 16, 100, 84)


@pytest.mark.parametrize("output_stride", [4, 8, 16, 32])
def test_wei_alexnet_output_strides(output_stride):
    net = tiny("wei_alexnet", output_stride=output_stride, norm="lrn").eval()
    with torch.no_grad():
        assert net(batch(100, 84)).shape == (2, 16, 100, 84)


def test_wei_alexnet_dilation_equals_shift_and_stitch():
    """The dense (output_stride=4) tower, subsampled every 8 cells, is the strided tower exactly."""
    dense = tiny("wei_alexnet", output_stride=4, norm="none").eval()
    strided = tiny("wei_alexnet", output_stride=32, norm="none").eval()
    strided.load_state_dict(dense.state_dict())
    x = batch(100, 84)
    with torch.no_grad():
        fd = dense.backbone.features(x)
        fs = strided.backbone.features(x)
    assert fd.shape[-2:] == (25, 21) and fs.shape[-2:] == (4, 3)
    torch.testing.assert_close(fd[..., ::8, ::8], fs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
@pytest.mark.parametrize("n", [16, 17, 31])
def test_upsample_aligned_maps_cell_i_to_pixel_factor_i(factor, n):
    cells = -(-n // factor)
    wcells = -(-5 // factor)
    ramp = torch.arange(cells, dtype=torch.float32).view(1, 1, cells, 1).expand(1, 1, cells, wcells)
    up = upsample_aligned(ramp, (n, 5), factor)
    assert up.shape == (1, 1, n, 5)
    expected = torch.clamp(torch.arange(n, dtype=torch.float32) / factor, max=cells - 1)
    torch.testing.assert_close(up[0, 0, :, 0], expected)


# ----------------------------------------------------------------------------------------- heads


def test_cosine_classifier_pixels_and_maps_agree():
    torch.manual_seed(0)
    head = CosineClassifier(8, 5, scale=10.0)
    desc = F.normalize(torch.randn(2, 8, 6, 7), dim=1)
    maps = head(desc)
    assert maps.shape == (2, 5, 6, 7)
    pix = head(desc.permute(0, 2, 3, 1).reshape(-1, 8))
    torch.testing.assert_close(maps.permute(0, 2, 3, 1).reshape(-1, 5), pix)
    ref = 10.0 * desc[0, :, 2, 3] @ F.normalize(head.weight, dim=1).t()
    torch.testing.assert_close(maps[0, :, 2, 3], ref)
    assert pix.abs().max() <= 10.0 + 1e-4
    with pytest.raises(BodycorrError, match=r"\(N, 8\)"):
        head(torch.randn(4, 7))


@pytest.mark.parametrize("method", ["group", "gather"])
def test_multitask_logits_equal_per_pixel_loop(method):
    torch.manual_seed(0)
    k, p, d, n = 6, 11, 8, 57
    heads = MultiTaskHeads(d, k, p, num_keypoints=4, scale=12.0)
    desc = F.normalize(torch.randn(n, d), dim=1)
    task = torch.randint(0, k, (n,))
    task[:3] = 5  # some tasks repeated, some absent
    got = heads.logits(desc, task, method=method)
    assert got.shape == (n, p)
    ref = torch.stack(
        [12.0 * F.normalize(heads.weight[task[i]], dim=1) @ desc[i] for i in range(n)]
    )
    torch.testing.assert_close(got, ref)
    kp = heads.keypoint_logits(desc)
    assert kp.shape == (n, 5)
    kp_ref = torch.stack([12.0 * F.normalize(heads.keypoint.weight, dim=1) @ desc[i] for i in range(n)])
    torch.testing.assert_close(kp, kp_ref)


def test_multitask_group_and_gather_gradients_agree():
    torch.manual_seed(0)
    heads = MultiTaskHeads(8, 4, 9, num_keypoints=0)
    desc = torch.randn(30, 8, requires_grad=True)
    task = torch.randint(0, 4, (30,))
    target = torch.randint(0, 9, (30,))
    grads = []
    for method in ("group", "gather"):
        heads.zero_grad()
        desc.grad = None
        F.cross_entropy(heads.logits(desc, task, method=method), target).backward()
        grads.append((desc.grad.clone(), heads.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_multitask_errors_and_empty():
    heads = MultiTaskHeads(8, 3, 5, num_keypoints=0)
    desc = torch.randn(4, 8)
    assert heads.logits(desc[:0], torch.zeros(0, dtype=torch.long)).shape == (0, 5)
    with pytest.raises(BodycorrError, match="task ids"):
        heads.logits(desc, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(BodycorrError, match="task_ids"):
        heads.logits(desc, torch.zeros(3, dtype=torch.long))
    with pytest.raises(BodycorrError, match="task_ids"):
        heads.logits(desc, torch.zeros(4))
    with pytest.raises(BodycorrError, match=r"\(N, 8\)"):
        heads.logits(desc[:, :4], torch.zeros(4, dtype=torch.long))
    with pytest.raises(BodycorrError, match="key-point"):
        heads.keypoint_logits(desc)
