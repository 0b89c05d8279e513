"""Image-to-surface networks (BodyMap): every "surface" model at a tiny size, plus the ViT's two stages."""

from __future__ import annotations

import io
import json

import pytest
import torch
import torch.nn.functional as F

from bodycorr.common.errors import BodycorrError
from bodycorr.models import checkpoint_dict, create_model, list_models, model_from_checkpoint_dict, model_task, tiny_overrides

MODELS = list_models("surface")
SIZES = [(64, 64), (72, 56), (50, 38)]  # square, multiples of 8 but not 16, odd-ish sizes


def tiny(name: str, **kw):
    torch.manual_seed(0)
    return create_model(name, **{**tiny_overrides(name), **kw})


def images(h: int, w: int, b: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g)


def perturb(net: torch.nn.Module, scale: float = 0.05) -> None:
    """Move every parameter off its initial value (zero-initialised layers included)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def test_registry_lists_both_surface_models():
    assert {"bodymap_vit", "bodymap_unet"} <= set(MODELS)
    assert all(model_task(n) == "surface" for n in MODELS)
    assert not set(MODELS) & set(list_models("depth"))
    assert set(MODELS) | set(list_models("depth")) == set(list_models())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("hw", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_output_shapes(name, hw):
    net = tiny(name).eval()
    with torch.no_grad():
        out = net(images(*hw))
    c = net.config.features
    assert out.features.shape == (2, c, *hw)
    assert out.silhouette.shape == (2, 1, *hw)
    assert torch.isfinite(out.features).all() and torch.isfinite(out.silhouette).all()
    if out.stage1 is not None:
        assert out.stage1.features.shape == (2, c, *hw) and out.stage1.silhouette.shape == (2, 1, *hw)
        assert out.stage1.stage1 is None


def test_vit_two_stages_and_rgb_only_ablation():
    x = images(48, 40)
    two = tiny("bodymap_vit").eval()
    perturb(two)
    with torch.no_grad():
        out = two(x)
    assert out.stage1 is not None
    assert not torch.allclose(out.features, out.stage1.features)  # stage 2 uses the coarse map
    one = tiny("bodymap_vit", two_stream=False).eval()
    assert not any(n.startswith("corr") for n, _ in one.named_parameters())
    with torch.no_grad():
        o1 = one(x)
    assert o1.stage1 is None and o1.features.shape == out.features.shape


def test_vit_given_coarse_map_skips_stage_one_and_reuses_appearance_tokens():
    net = tiny("bodymap_vit").eval()
    perturb(net)
    x = images(48, 40)
    calls = []
    hook = net.app.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        auto = net(x)
        assert len(calls) == 1  # two stages, one appearance pass
        coarse = torch.rand(2, 4, 48, 40)
        given = net(x, coarse)
        again = net(x, coarse.clone())
    hook.remove()
    assert given.stage1 is None
    torch.testing.assert_close(given.features, again.features)
    assert not torch.allclose(given.features, auto.features)  # the coarse map matters
    with torch.no_grad():
        other = net(x, torch.rand(2, 4, 48, 40))
    assert not torch.allclose(other.features, given.features)
    with pytest.raises(BodycorrError, match="coarse"):
        net(x, torch.rand(2, 3, 48, 40))


@pytest.mark.parametrize("name", MODELS)
def test_classify_and_expected_colour(name):
    net = tiny(name).eval()
    perturb(net)
    with torch.no_grad():
        f = net(images(40, 32)).features  # (2, C, 40, 32)
        maps = net.classify(f)
        pix = net.classify(f[:, :, 5, 7])
        e_map = net.expected_colour(f)
        e_pix = net.expected_colour(f[:, :, 5, 7])
    assert maps.shape == (2, 3, 256, 40, 32) and pix.shape == (2, 3, 256)
    torch.testing.assert_close(maps[:, :, :, 5, 7], pix)
    ref = (pix.softmax(-1) * torch.arange(256.0)).sum(-1)
    assert e_pix.shape == (2, 3)
    torch.testing.assert_close(e_pix, ref)
    torch.testing.assert_close(e_map[:, :, 5, 7], ref)
    assert e_map.min() >= 0 and e_map.max() <= 255
    with pytest.raises(BodycorrError, match="features"):
        net.classify(f[0, 0])


@pytest.mark.parametrize("name", MODELS)
def test_predict_matches_forward_and_classify(name):
    net = tiny(name)
    perturb(net, 0.2)
    x = images(36, 28)
    net.train()
    p = net.predict(x, chunk=100)
    assert net.training  # mode restored
    net.eval()
    with torch.no_grad():
        out = net(x)
        probs = net.classify(out.features).softmax(2)  # (B, 3, 256, H, W)
    b, h, w = 2, 36, 28
    assert p.colour.shape == (b, h, w, 3) and p.confidence.shape == (b, h, w) and p.silhouette.shape == (b, h, w)
    torch.testing.assert_close(p.silhouette, out.silhouette[:, 0].sigmoid())
    # reference for a few pixels: argmax level refined by the expectation over argmax +- 4 levels
    for bi, y, xx in [(0, 0, 0), (1, 17, 11), (0, 35, 27)]:
        for c in range(3):
            q = probs[bi, c, :, y, xx]
            a = int(q.argmax())
            lo, hi = max(a - 4, 0), min(a + 4, 255)
            win = q[lo : hi + 1]
            ref = float((win * torch.arange(lo, hi + 1)).sum() / win.sum())
            assert p.colour[bi, y, xx, c].item() == pytest.approx(ref, abs=1e-3)
    assert (p.confidence >= 0).all() and (p.confidence <= 1 + 1e-6).all()
    whole = net.predict(x, chunk=1 << 20)
    torch.testing.assert_close(whole.colour, p.colour)
    torch.testing.assert_close(whole.confidence, p.confidence)


@pytest.mark.parametrize("name", MODELS)
def test_gradients_flow(name):
    net = tiny(name).train()
    perturb(net)  # zero-initialised fusion projections would otherwise block the correspondence stream
    x = images(48, 40)
    out = net(x)
    target = (torch.arange(48 * 40) % 256).view(1, 48, 40)
    loss = 0
    for o in (out, out.stage1) if out.stage1 is not None else (out,):
        pix = o.features.permute(0, 2, 3, 1).reshape(-1, o.features.shape[1])[::37]  # sampled pixels
        logits = net.classify(pix)
        loss = loss + F.cross_entropy(logits.reshape(-1, 256), target.reshape(-1)[: len(pix)].repeat(3) % 256)
        loss = loss + F.binary_cross_entropy_with_logits(o.silhouette, torch.ones_like(o.silhouette))
    loss.backward()
    # As in DPT, the deepest fusion block has no skip input, so its skip unit is never used.
    unused = ("fusion.3.skip.",) if name == "bodymap_vit" else ()
    for pname, prm in net.named_parameters():
        if pname.startswith(unused):
            assert prm.grad is None, pname
            continue
        assert prm.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(prm.grad).all(), pname
    streams = ["app", "corr"] if name == "bodymap_vit" else ["stem"]
    for s in streams:
        first = next(p for n, p in net.named_parameters() if n.startswith(s) and p.ndim == 4)
        assert first.grad.abs().sum() > 0, s


def test_vit_coarse_input_is_detached_from_stage_one():
    """Stage-2 losses reach stage 1's weights only through the shared tokens, never through the coarse map."""
    net = tiny("bodymap_vit").train()
    perturb(net)
    x = images(32, 32)
    out = net(x)
    out.features.sum().backward()
    # the same coarse map given from outside (no stage 1 at all) must give the same gradients
    g_auto = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad()
    with torch.no_grad():
        # rebuild the coarse map exactly as forward does, then feed it in
        o1 = net(x).stage1
        small = F.avg_pool2d(o1.features, 4)
        col = net.expected_colour(small) / 255
        prob = F.avg_pool2d(o1.silhouette, 4).sigmoid()
        coarse = F.interpolate(torch.cat([col, prob], 1), size=(32, 32), mode="nearest")
    given = net(x, coarse)
    torch.testing.assert_close(given.features, out.features)
    given.features.sum().backward()
    for n, p in net.named_parameters():
        if n in g_auto:
            torch.testing.assert_close(p.grad, g_auto[n], msg=n)


@pytest.mark.parametrize("name", MODELS)
def test_deterministic_in_eval(name):
    net = tiny(name).eval()
    x = images(50, 38)
    with torch.no_grad():
        a, b = net(x), net(x)
    assert torch.equal(a.features, b.features) and torch.equal(a.silhouette, b.silhouette)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("include_heads", [True, False])
def test_checkpoint_round_trip(name, include_heads):
    net = tiny(name).eval()
    perturb(net)
    x = images(40, 32)
    d = checkpoint_dict(net, include_heads=include_heads)
    assert d["name"] == name
    json.loads(json.dumps(d["config"]))
    buf = io.BytesIO()
    torch.save(d, buf)
    buf.seek(0)
    again = model_from_checkpoint_dict(torch.load(buf, weights_only=True))
    assert again.config == net.config and again.model_name == name
    with torch.no_grad():
        a, b = again(x), net(x)
        assert torch.equal(a.features, b.features) and torch.equal(a.silhouette, b.silhouette)
        assert torch.equal(again.classify(a.features[:, :, 0, 0]), net.classify(b.features[:, :, 0, 0]))


@pytest.mark.parametrize("name", MODELS)
def test_bad_input_raises_one_line(name):
    net = tiny(name)
    uint8 = (255 * torch.rand(1, 3, 32, 32)).to(torch.uint8)
    for bad in (torch.rand(2, 1, 32, 32), torch.rand(3, 32, 32), torch.rand(1, 3, 4, 4), uint8):
        with pytest.raises(BodycorrError, match="rgb|small") as e:
            net(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(BodycorrError, match="unknown option"):
        create_model(name, no_such_option=1)
    with pytest.raises(BodycorrError, match="features"):
        create_model(name, features=0)


def test_vit_config_checks():
    with pytest.raises(BodycorrError, match="patch"):
        create_model("bodymap_vit", patch=5)
    with pytest.raises(BodycorrError, match="divisible"):
        create_model("bodymap_vit", dim=10, heads=3)
    with pytest.raises(BodycorrError, match="depth"):
        create_model("bodymap_vit", depth=2)


@pytest.mark.parametrize("name", MODELS)
def test_default_models_fit_the_shipping_budget(name):
    """Shipped weights must stay < 20 MB: keep the defaults under 5 M parameters (float16 < 10 MB)."""
    net = create_model(name)
    n = sum(p.numel() for p in net.parameters())
    assert 100_000 < n < 5_000_000
    tiny_n = sum(p.numel() for p in tiny(name).parameters())
    assert tiny_n < 60_000


@pytest.mark.parametrize("name", MODELS)
def test_predict_foreground_only_matches_full_on_the_silhouette(name):
    net = tiny(name)
    perturb(net, 0.2)
    x = images(36, 28)
    full = net.predict(x)
    part = net.predict(x, foreground=0.5, dilate=1)
    torch.testing.assert_close(part.silhouette, full.silhouette)
    grown = torch.nn.functional.max_pool2d((full.silhouette > 0.5).float()[:, None], 3, stride=1, padding=1)[:, 0] > 0
    assert 0 < int(grown.sum()) < grown.numel()  # the fixture exercises both branches
    torch.testing.assert_close(part.colour[grown], full.colour[grown])
    torch.testing.assert_close(part.confidence[grown], full.confidence[grown])
    assert (part.colour[~grown] == 0).all() and (part.confidence[~grown] == 0).all()
    nobody = net.predict(x, foreground=1.1)  # a threshold no probability passes: nothing classified
    assert (nobody.confidence == 0).all() and nobody.colour.shape == full.colour.shape
