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

    Writes ``transfer.png`` (B repainted), ``side_by_side.png`` (labelled panels: A, B, the result,
    and A's appearance on the template, front and back, and in its UV atlas: :func:`transfer_figure`),
    ``texture.png`` (A's appearance in the template's UV atlas) and ``texture_vertices.npy`` ((Vt, 3) colours).
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

    template = get_template()
    atlas = uv_texture(tex, texture_size, template)
    for name, img in (("transfer.png", result), ("texture.png", atlas)):
        with atomic_path(out / name) as tmp:
            Image.fromarray(img).save(tmp, format="PNG")
    coverage = float((tex.observed > 0).mean())
    transfer_figure(a, b, result, tex.colours, atlas, template.mesh.vertices, template.mesh.faces, out / "side_by_side.png",
                    coverage=coverage, names=(Path(source).name, Path(target).name))  # fmt: skip
    with atomic_path(out / "texture_vertices.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, tex.colours)
    summary = {"source": source, "target": target, "source_pixels": int(ca.silhouette.sum()), "target_pixels": int(cb.silhouette.sum()),
               "texture_coverage": coverage}  # fmt: skip
    write_json_atomic(out / "summary.json", summary)
    return summary


def transfer_figure(a: np.ndarray, b: np.ndarray, result: np.ndarray, colours: np.ndarray, atlas: np.ndarray,
                    vertices: np.ndarray, faces: np.ndarray, path: str | Path, coverage: float | None = None,
                    names: tuple[str, str] = ("", "")) -> Path:  # fmt: skip
    """The transfer as labelled panels: A (the appearance), B (the pose and shape), B repainted, and
    A's appearance on the template, front and back, and in its UV atlas.

    a, b, result: (H, W, 3) uint8 photos; colours: (V, 3) template vertex colours in [0, 1];
    atlas: (S, S, 3) uint8 UV texture; vertices (V, 3), faces (F, 3): the template. ``coverage``:
    the share of template vertices A's photo showed (the rest filled in from neighbours).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bodycorr.common.fileio import atomic_path
    from bodycorr.matching.visualize import draw_mesh

    fig, axes = plt.subplots(2, 3, figsize=(13, 9.5), layout="constrained")
    na, nb = (f" ({n})" if n else "" for n in names)
    photos = ((a, f"A: source photo{na}\n(the appearance)"), (b, f"B: target photo{nb}\n(the pose and shape)"),
              (result, "B repainted with A's appearance\n(transfer.png)"))  # fmt: skip
    for ax, (img, title) in zip(axes[0], photos):
        ax.imshow(img)
        ax.set_title(title, fontsize=11)
    seen = "" if coverage is None else f"\n({100 * coverage:.0f} % seen in A, the rest filled in)"
    for ax, side in zip(axes[1, :2], ("front", "back")):
        draw_mesh(ax, vertices, faces, np.asarray(colours, np.float64), side, shade=0.3)
        ax.set_title(f"A's appearance on the template: {side}" + seen, fontsize=11)
    axes[1, 2].imshow(atlas)
    axes[1, 2].set_title("A's appearance in the template's\nUV atlas (texture.png)", fontsize=11)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
