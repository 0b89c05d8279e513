"""Image to template: reading images, framing (letterbox there and back), the two-pass mapper, bad input."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from bodycorr.body.surface_code import get_surface_code
from bodycorr.common.errors import BodycorrError
from bodycorr.matching import image as mi


class BrightIsPerson(torch.nn.Module):
    """A stand-in network: bright pixels are the person, all coloured like template vertex 123."""

    def __init__(self, colour: np.ndarray):
        super().__init__()
        self.colour = torch.as_tensor(colour, dtype=torch.float32)
        self.sizes: list[tuple[int, int]] = []

    def predict(self, x: torch.Tensor, foreground: float | None = None):
        self.sizes.append(tuple(x.shape[-2:]))
        sil = (x.mean(1) > 0.5).float()
        b, h, w = sil.shape
        return SimpleNamespace(colour=self.colour.expand(b, h, w, 3).clone(), confidence=sil.clone(), silhouette=sil)


def test_read_image_converts_grey_16bit_and_rgba(tmp_path):
    grey = np.arange(64 * 48, dtype=np.uint8).reshape(48, 64)
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(grey.astype(np.uint16) * 200).save(tmp_path / "g16.png")
    Image.fromarray(np.dstack([grey] * 3 + [np.full_like(grey, 255)])).save(tmp_path / "rgba.png")
    for name in ("g.png", "g16.png", "rgba.png"):
        rgb = mi.read_image(tmp_path / name)
        assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
        assert rgb[..., 0].astype(int).max() > 200  # levels kept (16-bit scaled down, not clipped to white)
        assert (rgb[..., 0] == rgb[..., 1]).all()


def test_bad_images_are_one_line(tmp_path, monkeypatch):
    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(BodycorrError, match="cannot be read as an image"):
        mi.read_image(tmp_path / "x.png")
    with pytest.raises(BodycorrError, match="not found|no such|does not exist"):
        mi.read_image(tmp_path / "missing.png")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(mi, "MAX_PIXELS", 1000)
    with pytest.raises(BodycorrError, match="too large"):
        mi.read_image(tmp_path / "big.png")
    with pytest.raises(BodycorrError, match="too small"):
        mi.check_image(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(BodycorrError, match="NaN"):
        mi.check_image(np.full((16, 16, 3), np.nan))


@pytest.mark.parametrize("box", [(0, 0, 80, 60), (10, 5, 50, 55), (-10, -20, 90, 80)])
def test_letterbox_and_back_is_identity_inside_the_box(box):
    h, w = 60, 80
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.dstack([xx * 3, yy * 4, xx + yy]).astype(np.uint8)  # linear ramps, no wrap-around
    x, params = mi._letterbox(rgb, box, 96)
    assert x.shape == (1, 3, 96, 96)
    back = mi._unletterbox(x, box, params, (h, w))[0].permute(1, 2, 0).numpy() * 255
    x0, y0, x1, y1 = box
    inner = (slice(max(y0, 0) + 2, min(y1, h) - 2), slice(max(x0, 0) + 2, min(x1, w) - 2))
    assert np.abs(back[inner] - rgb[inner]).max() < 6  # bilinear there and back on a linear ramp


def test_mapper_finds_the_person_and_decodes_the_code():
    code = get_surface_code()
    net = BrightIsPerson(code.colours[123].astype(np.float32))
    mapper = mi.ImageMapper(net, size=64, code=code)
    rgb = np.zeros((120, 200, 3), np.uint8)
    rgb[30:90, 120:150] = 255  # the "person"
    corr = mapper(rgb)
    assert corr.shape == (120, 200)
    inner = np.zeros((120, 200), bool)
    inner[33:87, 123:147] = True
    assert corr.silhouette[inner].all() and not corr.silhouette[:, :110].any()
    assert (corr.vertex[inner] == 123).all() and (corr.vertex[~corr.silhouette] == -1).all()
    assert np.isfinite(corr.uv[inner]).all() and np.isnan(corr.uv[~corr.silhouette]).all()
    assert net.sizes == [(64, 64), (64, 64)]  # whole image, then the crop around the person


def test_mapper_on_an_empty_image_gives_an_empty_silhouette():
    code = get_surface_code()
    net = BrightIsPerson(code.colours[0].astype(np.float32))
    corr = mi.ImageMapper(net, size=64, code=code)(np.zeros((50, 70, 3), np.uint8))
    assert not corr.silhouette.any() and (corr.vertex == -1).all()
    assert len(net.sizes) == 1  # no second pass without a person


def test_depth_model_refused_as_image_model(tmp_path):
    from bodycorr.models import create_model, tiny_overrides
    from bodycorr.models.io import save_model_file

    save_model_file(create_model("unet", **tiny_overrides("unet")), tmp_path / "d.pt")
    with pytest.raises(BodycorrError, match="not an image model"):
        mi.load_image_model(str(tmp_path / "d.pt"))


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_large_image_is_scaled_and_the_summary_says_so(fmt, tmp_path, monkeypatch, capsys):
    """A 3000x2000 photo is mapped at 2048x1365 (outputs too), with its passes shown on stderr."""
    import json

    code = get_surface_code()
    net = BrightIsPerson(code.colours[123].astype(np.float32))
    monkeypatch.setattr(mi, "load_mapper", lambda model=None, device="cpu": mi.ImageMapper(net, size=64, code=code))
    big = np.zeros((2000, 3000, 3), np.uint8)
    big[600:1400, 1200:1500] = 255  # the "person"
    path = tmp_path / f"big.{fmt[:3]}"
    Image.fromarray(big).save(path, format=fmt.upper(), **({"compress_level": 1} if fmt == "png" else {"quality": 90}))
    rgb, full = mi.read_image_bounded(path, 2048)
    assert rgb.shape == (1365, 2048, 3) and full == (2000, 3000)
    summary = mi.run_image(path, tmp_path / "out", progress=True)
    assert summary["size"] == [1365, 2048] and summary["scaled_from"] == [2000, 3000]
    assert summary["scale"] == pytest.approx(2048 / 3000, abs=1e-3)
    with np.load(tmp_path / "out" / "correspondence.npz") as z:
        assert z["vertex"].shape == (1365, 2048)
        sil = z["silhouette"]
    ys, xs = np.nonzero(sil)  # the person where it was, in scaled pixels
    assert abs(xs.mean() - 1350 * summary["scale"]) < 5 and abs(ys.mean() - 1000 * summary["scale"]) < 5
    assert Image.open(tmp_path / "out" / "overlay.png").size == (2048, 1365)
    err = capsys.readouterr().err
    assert "3000x2000" in err and "scaled to 2048x1365" in err and "mapping the person" in err and "3/3" in err
    # a small image: as it is, silent
    Image.fromarray(big[::20, ::20]).save(tmp_path / "small.png")
    small = mi.run_image(tmp_path / "small.png", tmp_path / "out2", progress=True)
    assert small["size"] == [100, 150] and small["scaled_from"] is None and small["scale"] == 1.0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("person", [True, False])
def test_overlay_legend_shows_photo_overlay_and_template_code(person, tmp_path, monkeypatch, saved_figures):
    """overlay_legend.png: the photo, the overlay, the template front and back in the overlay's colour
    code, each titled, and a line on how much is person and how sure the map is."""
    code = get_surface_code()
    net = BrightIsPerson(code.colours[123].astype(np.float32))
    monkeypatch.setattr(mi, "load_mapper", lambda model=None, device="cpu": mi.ImageMapper(net, size=64, code=code))
    rgb = np.zeros((90, 60, 3), np.uint8)
    if person:
        rgb[20:70, 20:40] = 255
    Image.fromarray(rgb).save(tmp_path / "p.png")
    summary = mi.run_image(tmp_path / "p.png", tmp_path / "out")
    legend = tmp_path / "out" / "overlay_legend.png"
    assert legend.is_file() and Image.open(legend).size[0] > 600  # a figure, not the 60x90 overlay
    assert Image.open(tmp_path / "out" / "overlay.png").size == (60, 90)  # still pixel for pixel
    fig = saved_figures[-1]
    titles = [ax.get_title().replace("\n", " ") for ax in fig.axes]
    assert titles[0] == "input" and titles[1].startswith("correspondence")
    assert titles[2:] == ["template colour code: front", "template colour code: back"]
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), rgb)
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), np.asarray(Image.open(tmp_path / "out" / "overlay.png")))
    # the legend wears the code's many colours, not one flat colour
    legend_colours = fig.axes[2].collections[0].get_facecolor()[:, :3]
    assert legend_colours.std(0).min() > 0.1
    note = fig._supxlabel.get_text()
    if person:
        assert f"{summary['person_pixels']:,} person pixels" in note and f"mean confidence {summary['mean_confidence']:.2f}" in note
    else:
        assert note == "no person found: nothing to colour"


def test_overlay_note_gives_the_plausibility_where_the_summary_has_it():
    base = {"size": [100, 50], "person_pixels": 1250, "mean_confidence": 0.4, "empty": False}
    assert mi.overlay_note(base) == "1,250 person pixels (25 % of the picture), mean confidence 0.40 (0 to 1)"
    note = mi.overlay_note(base | {"plausibility": {"score": 0.31, "is_person": False}})
    assert note.endswith("; plausibility 0.31 (0 to 1: does NOT look like a person)")
    assert "looks like a person" in mi.overlay_note(base | {"plausibility": {"score": 0.9, "is_person": True}})
