"""Image to template surface: per-pixel template vertex, barycentrics and UV from an RGB image (BodyMap)."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bodycorr.body.surface_code import SurfaceCode, get_surface_code
from bodycorr.common.errors import BodycorrError, check_readable
from bodycorr.models.io import load_model_file, read_torch_file
from bodycorr.models.registry import model_task

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_IMAGE_MODEL = WEIGHTS_DIR / "bodymap-vit.pt"
MAX_PIXELS = 40_000_000  # larger images are refused (decompression bombs, accidental raw scans)
#: ``bodycorr image`` downscales images whose longer side is over this (16 times the shipped
#: model's 128 px input: the network never sees more than its input size, and a 6000x6000 photo
#: mapped at full size took 3 minutes and 5 GB); its outputs are at the scaled size.
MAX_SIDE = 2048
LARGE_IMAGE_PIXELS = 2_000_000  # from this size on, ``bodycorr image`` shows its passes on stderr


@dataclass(frozen=True, eq=False)
class ImageCorrespondence:
    """Where each pixel of an image lies on the template.

    Attributes:
        silhouette: (H, W) bool person pixels (predicted).
        vertex: (H, W) int64 template vertex, -1 outside the silhouette.
        face: (H, W) int64 template triangle, -1 outside.
        bary: (H, W, 3) float32 barycentrics in that triangle.
        uv: (H, W, 2) float32 template UV, NaN outside.
        colour: (H, W, 3) float32 predicted surface colour code in [0, 255].
        confidence: (H, W) float32 in [0, 1] (0 outside).
        silhouette_prob: (H, W) float32 person probability.
    """

    silhouette: np.ndarray
    vertex: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    uv: np.ndarray
    colour: np.ndarray
    confidence: np.ndarray
    silhouette_prob: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.silhouette.shape)  # type: ignore[return-value]


def read_image(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB.

    Grey, grey+alpha, RGBA, palette and 16-bit images are converted; files that are not images,
    and images over 40 megapixels, raise one clear line. ``max_side``: downscale (Lanczos) so
    that the longer side is at most this (see :func:`read_image_bounded`).
    """
    return read_image_bounded(path, max_side)[0]


def read_image_bounded(path: str | Path, max_side: int | None = MAX_SIDE) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image file as (H, W, 3) uint8 RGB, downscaled so that its longer side is at most
    ``max_side`` (None: as it is), and its size (H, W) in the file.

    A JPEG is decoded at a reduced scale first (``Image.draft``), so memory stays near the scaled
    image's; other formats are decoded once at full size (3 bytes a pixel) and resized.
    """
    from PIL import Image

    p = check_readable(path, "image")
    try:
        with Image.open(p) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise BodycorrError(f"image {p}: {w}x{h} is too large (over {MAX_PIXELS // 1_000_000} megapixels). Downscale it first.")
            target = None
            if max_side is not None and max(w, h) > max_side:
                s = max_side / max(w, h)
                target = (max(1, round(w * s)), max(1, round(h * s)))
                im.draft("RGB", target)  # JPEG only: decode at 1/2, 1/4 or 1/8 scale, still >= target
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64)
                hi = max(float(a.max()), 1.0)
                grey = Image.fromarray((a / hi * 255).astype(np.uint8))
                del a
                if target is not None:
                    grey = grey.resize(target, Image.Resampling.LANCZOS)
                rgb = np.repeat(np.asarray(grey)[..., None], 3, axis=2)
            else:
                im_rgb = im.convert("RGB")
                if target is not None:
                    im_rgb = im_rgb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
                rgb = np.asarray(im_rgb)
    except BodycorrError:
        raise
    except Image.DecompressionBombError:
        raise BodycorrError(f"image {p}: too large (over {MAX_PIXELS // 1_000_000} megapixels). Downscale it first.") from None
    except Exception as e:  # PIL.UnidentifiedImageError, truncated files
        raise BodycorrError(f"image {p}: cannot be read as an image ({type(e).__name__}). Give a PNG or JPEG file.") from None
    return check_image(rgb, str(p)), (h, w)


def check_image(rgb: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate and normalise an in-memory image to (H, W, 3) uint8."""
    a = np.asarray(rgb)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise BodycorrError(f"{name}: expected an (H, W, 3) RGB image, got shape {a.shape}.")
    a = a[..., :3]
    if min(a.shape[:2]) < 8:
        raise BodycorrError(f"{name}: {a.shape[1]}x{a.shape[0]} pixels is too small. Give an image of at least 8x8.")
    if a.dtype != np.uint8:
        f = a.astype(np.float64)
        if not np.isfinite(f).all():
            raise BodycorrError(f"{name}: contains NaN or infinite values.")
        scale = 1.0 if f.max() <= 1.0 else (255.0 if f.max() <= 255 else float(f.max()))
        a = np.clip(f / scale * 255 + 0.5, 0, 255).astype(np.uint8)
    return a


@functools.lru_cache(maxsize=4)
def load_image_model(model: str | None = None, device: str = "cpu") -> tuple[torch.nn.Module, int, str]:
    """(network, working size, surface code method) of an image model file (the shipped one by default)."""
    path = Path(model) if model else DEFAULT_IMAGE_MODEL
    if not model and not path.exists():
        raise BodycorrError(f"no shipped image model at {path}. Train one with 'bodycorr train --config bodymap-small' and pass --model runs/bodymap-small/model.pt.")
    net = load_model_file(path, device)
    if model_task(getattr(net, "model_name", "")) != "surface":
        raise BodycorrError(f"model file {path}: a {net.model_name!r} depth model, not an image model. Pass an image (surface) model.")
    meta = read_torch_file(path, "model file").get("meta", {})
    return net, int(meta.get("size", 128)), str(meta.get("code", "position"))


def _letterbox(rgb: np.ndarray, box: tuple[int, int, int, int], size: int) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """Crop ``box`` (x0, y0, x1, y1; may extend outside) and fit it into a ``size`` square.

    Returns the (1, 3, size, size) tensor and (scale, ox, oy): image pixel (x, y) lands at
    ``((x - x0) * scale + ox, (y - y0) * scale + oy)`` in the square.
    """
    x0, y0, x1, y1 = box
    h, w = rgb.shape[:2]
    bw, bh = x1 - x0, y1 - y0
    scale = size / max(bw, bh)
    # sample the square's pixel centres back in the image (bilinear, edge pixels replicated)
    ox, oy = (size - bw * scale) / 2, (size - bh * scale) / 2
    t = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255
    ys = (torch.arange(size) + 0.5 - oy) / scale + y0
    xs = (torch.arange(size) + 0.5 - ox) / scale + x0
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx / w * 2 - 1, gy / h * 2 - 1], -1)[None]
    inside = ((gx >= x0) & (gx < x1) & (gy >= y0) & (gy < y1))[None, None].float()
    x = F.grid_sample(t, grid.float(), mode="bilinear", padding_mode="border", align_corners=False) * inside
    return x, (scale, ox, oy)


def _unletterbox(maps: torch.Tensor, box: tuple[int, int, int, int], params: tuple[float, float, float], hw: tuple[int, int]) -> torch.Tensor:
    """Resample (1, C, S, S) maps made by :func:`_letterbox` back onto the (H, W) image (0 outside the box)."""
    scale, ox, oy = params
    x0, y0, x1, y1 = box
    h, w = hw
    s = maps.shape[-1]
    ys = ((torch.arange(h) + 0.5 - y0) * scale + oy) / s * 2 - 1
    xs = ((torch.arange(w) + 0.5 - x0) * scale + ox) / s * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], -1)[None].float()
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class ImageMapper:
    """Maps RGB images to the template with an image-to-surface network.

    Two passes: the whole image (letterboxed) finds the person, then a square crop around the
    predicted silhouette (with a margin, as in training framing) gives the map.
    """

    def __init__(self, net: torch.nn.Module, size: int = 128, code: SurfaceCode | None = None, device: str = "cpu",
                 threshold: float = 0.5, margin: float = 0.12):  # fmt: skip
        self.net = net.eval().to(device)
        self.size = size
        self.code = code or get_surface_code()
        self.device = device
        self.threshold = threshold
        self.margin = margin

    @torch.no_grad()
    def _run(self, rgb: np.ndarray, box: tuple[int, int, int, int]) -> torch.Tensor:
        """(1, 5, H, W) maps on the image: expected colour (3), confidence, silhouette probability."""
        x, params = _letterbox(rgb, box, self.size)
        p = self.net.predict(x.to(self.device), foreground=self.threshold)
        maps = torch.cat([p.colour.permute(0, 3, 1, 2), p.confidence[:, None], p.silhouette[:, None]], 1).float().cpu()
        return _unletterbox(maps, box, params, rgb.shape[:2])

    def __call__(self, rgb: np.ndarray, progress: bool = False) -> ImageCorrespondence:
        """rgb: (H, W, 3) uint8 (other layouts are normalised by :func:`check_image`).

        ``progress``: a bar on stderr over the two passes and the decoding (for large images).
        """
        rgb = check_image(rgb)
        h, w = rgb.shape[:2]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=3, desc="image: finding the person", unit="step", mininterval=0, file=sys.stderr, dynamic_ncols=True)
        try:
            return self._map(rgb, bar)
        finally:
            if bar is not None:
                bar.close()

    def _map(self, rgb: np.ndarray, bar) -> ImageCorrespondence:
        h, w = rgb.shape[:2]
        step = (lambda desc: (bar.update(), bar.set_description(desc))) if bar is not None else (lambda desc: None)
        maps = self._run(rgb, (0, 0, w, h))
        step("image: mapping the person")
        sil = maps[0, 4].numpy() > self.threshold
        if sil.any():
            ys, xs = np.nonzero(sil)
            cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
            side = max(xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()) * (1 + 2 * self.margin)
            side = max(side, 16.0)
            box = (int(np.floor(cx - side / 2)), int(np.floor(cy - side / 2)), int(np.ceil(cx + side / 2)), int(np.ceil(cy + side / 2)))
            crop = self._run(rgb, box)
            # the crop's maps inside its box, the full pass elsewhere
            x0, y0, x1, y1 = box
            inb = np.zeros((h, w), bool)
            inb[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)] = True
            maps = torch.where(torch.from_numpy(inb)[None, None], crop, maps)
            del crop
        step("image: decoding the surface code")
        corr = self.decode(maps[0].permute(1, 2, 0).numpy())
        step("image: done")
        return corr

    def decode(self, maps: np.ndarray) -> ImageCorrespondence:
        """(H, W, 5) colour, confidence, silhouette probability -> :class:`ImageCorrespondence`."""
        h, w = maps.shape[:2]
        prob = maps[..., 4].astype(np.float32)
        sil = prob > self.threshold
        vertex = -np.ones((h, w), np.int64)
        face = -np.ones((h, w), np.int64)
        bary = np.zeros((h, w, 3), np.float32)
        uv = np.full((h, w, 2), np.nan, np.float32)
        colour = np.clip(maps[..., :3], 0, 255).astype(np.float32)
        conf = np.where(sil, np.clip(maps[..., 3], 0, 1), 0).astype(np.float32)
        if sil.any():
            d = self.code.decode(colour[sil])
            vertex[sil], face[sil], bary[sil], uv[sil] = d.vertex, d.face, d.bary, d.uv
        return ImageCorrespondence(silhouette=sil, vertex=vertex, face=face, bary=bary, uv=uv, colour=colour, confidence=conf, silhouette_prob=prob)


@functools.lru_cache(maxsize=4)
def load_mapper(model: str | None = None, device: str = "cpu") -> ImageMapper:
    net, size, code = load_image_model(model, device)
    return ImageMapper(net, size, code=get_surface_code(code), device=device)


def correspondence_png(corr: ImageCorrespondence, rgb: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 picture: the surface colour code on the silhouette, over a dimmed image (or black)."""
    base = np.zeros(corr.shape + (3,), np.uint8) if rgb is None else (rgb.astype(np.float32) * 0.35).astype(np.uint8)
    out = base.copy()
    out[corr.silhouette] = np.clip(corr.colour[corr.silhouette] + 0.5, 0, 255).astype(np.uint8)
    return out


def run_image(path: str | Path, out_dir: str | Path, model: str | None = None, device: str = "cpu",
              max_side: int | None = MAX_SIDE, progress: bool = False, strict: bool = False) -> dict:  # fmt: skip
    """The ``bodycorr image`` job: map one image to the template and write the results.

    Writes ``correspondence.npz`` (vertex, face, bary, uv, silhouette, confidence, colour),
    ``correspondence.png`` (colour-coded), ``overlay.png`` (the code over the dimmed photo, pixel for
    pixel), ``overlay_legend.png`` (the photo, the overlay and, as their legend, the template in the
    same colour code, front and back: :func:`~bodycorr.matching.visualize.image_overlay_figure`),
    ``silhouette.png`` and ``summary.json``.
    An image with nobody in it gives an empty silhouette (and says so), not an error. ``path`` may
    also be ``sample:NAME``, a photograph shipped in scikit-image (:mod:`bodycorr.data.samples`).
    ``summary.json`` gives the silhouette's ``plausibility``
    (:func:`~bodycorr.matching.plausibility.image_plausibility`); a silhouette that does not look
    like a person's is reported with one warning line on stderr, or refused (nothing written) when ``strict``.

    An image whose longer side is over ``max_side`` (default :data:`MAX_SIDE`; None: never) is
    downscaled first, and every output is at the scaled size: ``summary.json`` gives ``size``
    (scaled), ``scaled_from`` (the file's [H, W], or null) and ``scale`` (scaled / original;
    multiply output pixel coordinates by 1 / scale for the original's). ``progress``: lines and a
    bar over the two passes on stderr, for images over :data:`LARGE_IMAGE_PIXELS` (the command
    turns it on).
    """
    import time

    from bodycorr.common.fileio import check_output_dir, output_run
    from bodycorr.data.samples import is_sample, load_sample
    from bodycorr.matching.plausibility import image_plausibility

    t_read = time.perf_counter()
    if is_sample(path):  # sample:NAME, a photograph shipped in scikit-image
        rgb = check_image(load_sample(path), str(path))
        full = tuple(rgb.shape[:2])
    else:
        rgb, full = read_image_bounded(path, max_side)
    check_output_dir(out_dir)
    scale = max(rgb.shape[:2]) / max(full) if tuple(rgb.shape[:2]) != full else 1.0
    show = progress and full[0] * full[1] >= LARGE_IMAGE_PIXELS
    if show:
        how = f"scaled to {rgb.shape[1]}x{rgb.shape[0]} (longer side {max_side}; the outputs are at this size)" if scale != 1.0 else "at full size"
        print(f"image: {full[1]}x{full[0]} read in {time.perf_counter() - t_read:.1f} s; mapping it {how}", file=sys.stderr, flush=True)
    mapper = load_mapper(model, device)
    t0 = time.perf_counter()
    corr = mapper(rgb, progress=show)
    seconds = time.perf_counter() - t0
    scaling = {"scaled_from": list(full) if scale != 1.0 else None, "scale": round(scale, 6)}
    plaus = image_plausibility(corr.silhouette, corr.confidence, corr.silhouette_prob)
    if corr.silhouette.any() and not plaus.is_person:  # (an empty silhouette is reported as "no person found")
        if strict:  # refused before anything is written
            raise BodycorrError(f"{plaus.message(str(path))}; refused (--strict). Drop --strict to go on anyway.")
        print(f"bodycorr: warning: {plaus.message(str(path))}", file=sys.stderr, flush=True)
    scaling["plausibility"] = plaus.to_json()  # goes into summary.json with the scaling
    with output_run(out_dir, IMAGE_OUTPUTS) as out:
        return _write_image_outputs(out, path, rgb, corr, mapper, model, seconds, scaling)


#: What :func:`run_image` writes (a rerun deletes the older run's first).
IMAGE_OUTPUTS = ("correspondence.npz", "correspondence.png", "overlay.png", "overlay_legend.png", "silhouette.png", "summary.json")


def _write_image_outputs(out: Path, path: str | Path, rgb: np.ndarray, corr: ImageCorrespondence, mapper: ImageMapper,
                         model: str | None, seconds: float, scaling: dict | None = None) -> dict:  # fmt: skip
    from PIL import Image

    from bodycorr.common.fileio import atomic_path, save_npz_atomic, write_json_atomic

    save_npz_atomic(out / "correspondence.npz", vertex=corr.vertex.astype(np.int32), face=corr.face.astype(np.int32), bary=corr.bary,
                    uv=corr.uv, silhouette=corr.silhouette, confidence=corr.confidence, colour=corr.colour.astype(np.float16))  # fmt: skip
    pictures = {
        "correspondence.png": correspondence_png(corr),
        "overlay.png": correspondence_png(corr, rgb),
        "silhouette.png": (corr.silhouette * 255).astype(np.uint8),
    }
    for name, img in pictures.items():
        with atomic_path(out / name) as tmp:
            Image.fromarray(img).save(tmp, format="PNG")
    summary = {
        "image": str(path), "size": list(rgb.shape[:2]), **(scaling or {"scaled_from": None, "scale": 1.0}), "model": str(model or DEFAULT_IMAGE_MODEL), "code": mapper.code.method,
        "person_pixels": int(corr.silhouette.sum()), "empty": not bool(corr.silhouette.any()),
        "mean_confidence": float(corr.confidence[corr.silhouette].mean()) if corr.silhouette.any() else 0.0,
        "seconds": round(seconds, 3),
    }  # fmt: skip
    _write_overlay_legend(out / "overlay_legend.png", rgb, pictures["overlay.png"], mapper.code, summary)
    write_json_atomic(out / "summary.json", summary)
    return summary


def overlay_note(summary: dict) -> str:
    """The line under ``overlay_legend.png``: how much of the picture is person, how sure the map is
    and, where the summary has it, how much the silhouette looks like a person (its plausibility)."""
    if summary.get("empty"):
        return "no person found: nothing to colour"
    h, w = summary["size"]
    text = (f"{summary['person_pixels']:,} person pixels ({100 * summary['person_pixels'] / (h * w):.0f} % of the picture), "
            f"mean confidence {summary['mean_confidence']:.2f} (0 to 1)")  # fmt: skip
    pl = summary.get("plausibility")
    if isinstance(pl, dict) and "score" in pl:
        looks = "looks like a person" if pl.get("is_person") else "does NOT look like a person"
        text += f"; plausibility {pl['score']:.2f} (0 to 1: {looks})"
    return text


def _write_overlay_legend(path: Path, rgb: np.ndarray, overlay: np.ndarray, code: SurfaceCode, summary: dict) -> None:
    from bodycorr.body.template import get_template
    from bodycorr.matching.visualize import image_overlay_figure

    mesh = get_template().mesh
    image_overlay_figure(rgb, overlay, mesh.vertices, code.faces, code.colours, path, overlay_note(summary))
