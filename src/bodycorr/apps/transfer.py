"""Texture transfer through the template: A's appearance painted onto B (BodyMap's application), and UV texture export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bodycorr.body.template import Template, get_template
from bodycorr.common.errors import BodycorrError
from bodycorr.matching.image import ImageCorrespondence


@dataclass(frozen=True, eq=False)
class VertexTexture:
    """Colours on the template.

    Attributes:
        colours: (Vt, 3) float32 RGB in [0, 1] per template vertex.
        observed: (Vt,) float32 weight of direct observations (0 = filled in from neighbours).
    """

    colours: np.ndarray
    observed: np.ndarray


def _adjacency(template: Template) -> sp.csr_matrix:
    f = template.mesh.faces
    n = template.num_vertices
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    a = sp.coo_matrix((np.ones(len(i), np.float32), (i, j)), shape=(n, n)).tocsr()
    a.data[:] = 1.0
    return a


def texture_from_image(rgb: np.ndarray, corr: ImageCorrespondence, template: Template | None = None, fill_iters: int = 200) -> VertexTexture:
    """Per-vertex colours of the template seen in an image.

    rgb: (H, W, 3) uint8; corr: its correspondence map (same H, W). Every silhouette pixel adds its
    colour to the three vertices of its template triangle, weighted by barycentrics and confidence;
    vertices no pixel saw get the average of their neighbours (diffused over the mesh).
    """
    template = template or get_template()
    if rgb.shape[:2] != corr.shape:
        raise BodycorrError(f"texture: image {rgb.shape[:2]} and correspondence map {corr.shape} differ in size.")
    n = template.num_vertices
    m = corr.silhouette & (corr.face >= 0)
    acc = np.zeros((n, 3), np.float64)
    wsum = np.zeros(n, np.float64)
    if m.any():
        tri = template.mesh.faces[corr.face[m]]
        w = corr.bary[m] * np.maximum(corr.confidence[m], 1e-3)[:, None]
        col = rgb[m].astype(np.float64) / 255
        for k in range(3):
            np.add.at(acc, tri[:, k], col * w[:, k : k + 1])
            np.add.at(wsum, tri[:, k], w[:, k])
    seen = wsum > 1e-6
    colours = np.zeros((n, 3), np.float64)
    colours[seen] = acc[seen] / wsum[seen, None]
    if not seen.any():
        colours[:] = 0.5
    elif not seen.all():
        a = _adjacency(template)
        known = seen.astype(np.float64)
        c = colours.copy()
        for _ in range(fill_iters):  # harmonic fill of the unseen vertices, seen ones held fixed
            num = a @ (c * known[:, None])
            den = a @ known
            upd = (~seen) & (den > 0)
            c[upd] = num[upd] / den[upd, None]
            known = np.where(upd, 1.0, known)
            if known.all():
                break
        c[known == 0] = colours[seen].mean(0)
        colours = c
    return VertexTexture(colours=colours.astype(np.float32), observed=wsum.astype(np.float32))


def paint(rgb: np.ndarray, corr: ImageCorrespondence, texture: VertexTexture, template: Template | None = None,
          keep_shading: bool = True) -> np.ndarray:  # fmt: skip
    """B's image with its person repainted from ``texture``.

    rgb: (H, W, 3) uint8 target image; corr: its map. With ``keep_shading`` the target's own
    luminance modulates the new albedo (so folds and light stay), as texture-transfer demos do.
    Returns (H, W, 3) uint8.
    """
    template = template or get_template()
    out = rgb.astype(np.float32) / 255
    m = corr.silhouette & (corr.face >= 0)
    if m.any():
        tri = template.mesh.faces[corr.face[m]]
        new = (texture.colours[tri] * corr.bary[m][..., None]).sum(1)
        if keep_shading:
            lum = out[m] @ np.array([0.299, 0.587, 0.114], np.float32)
            ref = max(float(np.median(lum)), 1e-3)
            new = new * np.clip(lum / ref, 0.4, 1.6)[:, None]
        out[m] = np.clip(new, 0, 1)
    return (out * 255 + 0.5).astype(np.uint8)


def uv_texture(texture: VertexTexture, size: int = 512, template: Template | None = None) -> np.ndarray:
    """Rasterise per-vertex colours into the template's UV atlas: (size, size, 3) uint8 (v up)."""
    template = template or get_template()
    img = np.zeros((size, size, 3), np.float32)
    fuv = template.face_uv * (size - 1)  # (F, 3, 2)
    cols = texture.colours[template.mesh.faces]  # (F, 3, 3)
    for f in range(len(fuv)):
        (x0, y0), (x1, y1), (x2, y2) = fuv[f]
        xmin, xmax = int(np.floor(min(x0, x1, x2))), int(np.ceil(max(x0, x1, x2)))
        ymin, ymax = int(np.floor(min(y0, y1, y2))), int(np.ceil(max(y0, y1, y2)))
        den = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2)
        if abs(den) < 1e-12:
            continue
        xs, ys = np.meshgrid(np.arange(xmin, xmax + 1), np.arange(ymin, ymax + 1))
        a = ((y1 - y2) * (xs - x2) + (x2 - x1) * (ys - y2)) / den
        b = ((y2 - y0) * (xs - x2) + (x0 - x2) * (ys - y2)) / den
        c = 1 - a - b
        inside = (a >= -1e-3) & (b >= -1e-3) & (c >= -1e-3)
        if inside.any():
            col = a[inside, None] * cols[f, 0] + b[inside, None] * cols[f, 1] + c[inside, None] * cols[f, 2]
            img[np.clip(ys[inside], 0, size - 1), np.clip(xs[inside], 0, size - 1)] = col
    return (np.clip(img[::-1], 0, 1) * 255 + 0.5).astype(np.uint8)


def run_transfer(source: str, target: str, out_dir: str, model: str | None = None, texture_size: int = 512) -> dict:
    """The ``bodycorr transfer A B`` job: A's appearance on B's person, through the template.

    Writes ``transfer.png`` (B repainted), ``side_by_side.png`` (A, B, result), ``texture.png``
    (A's appearance in the template's UV atlas) and ``texture_vertices.npy`` ((Vt, 3) colours).
    Photos over :data:`~bodycorr.matching.image.MAX_SIDE` pixels on their longer side are read at
    that size (as ``bodycorr image`` maps them), so memory stays bounded; the outputs are at it too.
    """
    from bodycorr.common.fileio import check_output_dir, output_run
    from bodycorr.matching.image import MAX_SIDE, load_mapper, read_image

    a, b = read_image(source, MAX_SIDE), read_image(target, MAX_SIDE)
    check_output_dir(out_dir)  # before the model and the work
    mapper = load_mapper(model)
    ca, cb = mapper(a), mapper(b)
    for name, c in ((source, ca), (target, cb)):
        if not c.silhouette.any():
            raise BodycorrError(f"transfer: no person found in {name}. Give an image with a person in it.")
    tex = texture_from_image(a, ca)
    result = paint(b, cb, tex)
    with output_run(out_dir, ("transfer.png", "side_by_side.png", "texture.png", "texture_vertices.npy", "summary.json")) as out:
        return _write_transfer(out, source, target, a, b, ca, cb, tex, result, texture_size)


def _write_transfer(out: Path, source: str, target: str, a: np.ndarray, b: np.ndarray, ca, cb, tex, result: np.ndarray,
                    texture_size: int) -> dict:  # fmt: skip
    from PIL import Image

    from bodycorr.common.fileio import atomic_path, write_json_atomic

    h = max(a.shape[0], b.shape[0])

    def pad(x: np.ndarray) -> np.ndarray:
        return np.pad(x, ((0, h - x.shape[0]), (0, 0), (0, 0)), constant_values=255)

    sheet = np.concatenate([pad(a), pad(b), pad(result)], axis=1)
    for name, img in (("transfer.png", result), ("side_by_side.png", sheet), ("texture.png", uv_texture(tex, texture_size))):
        with atomic_path(out / name) as tmp:
            Image.fromarray(img).save(tmp, format="PNG")
    with atomic_path(out / "texture_vertices.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, tex.colours)
    summary = {"source": source, "target": target, "source_pixels": int(ca.silhouette.sum()), "target_pixels": int(cb.silhouette.sum()),
               "texture_coverage": float((tex.observed > 0).mean())}  # fmt: skip
    write_json_atomic(out / "summary.json", summary)
    return summary
