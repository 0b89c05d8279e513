"""ONNX export of the depth and image networks, the library's input normalisation and decoding inside the graph."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bodycorr.common.errors import BodycorrError
from bodycorr.common.fileio import ensure_dir, write_bytes_atomic
from bodycorr.models.bodymap import LEVELS, BodyMapViT, SurfaceNet
from bodycorr.models.descriptor import DescriptorNet
from bodycorr.models.inputs import DEPTH_SCALE, depth_to_input
from bodycorr.models.io import load_model_file, read_torch_file
from bodycorr.models.registry import model_task

__all__ = [
    "OPSET",
    "TOLERANCE",
    "DepthGraph",
    "SurfaceGraph",
    "TwoPassGroupNorm",
    "OnnxExport",
    "onnx_graph",
    "export_onnx",
    "reference_outputs",
    "run_onnx",
    "example_input",
]

OPSET = 17
# Largest |ONNX - PyTorch| accepted by the export check, per output. Measured on CPU (onnxruntime
# 1.32, torch 2.13) over the registered models at tiny size and the shipped ones (depth 32x32 to
# 1024x768): descriptors <= 7e-6, colour <= 1.1e-4 levels (of 0..255), confidence <= 5e-7,
# silhouette <= 2.2e-6; the bounds leave at least 14x room.
TOLERANCE = {"descriptors": 1e-4, "colour": 1e-2, "confidence": 1e-4, "silhouette": 1e-4}
_INSTALL = "Install the export extra: pip install 'bodycorr[export]' (onnx, onnxscript, onnxruntime)."


class DepthGraph(nn.Module):
    """The depth network as the library runs it: ``net(depth_to_input(depth))`` in one module.

    depth: (B, H, W) float32 metres, 0 (or NaN) = no data, already framed as the model expects
    (the person cropped and resized to the working size, as
    :meth:`bodycorr.matching.extract.DescriptorExtractor.dense` receives it).
    Returns (B, D, H, W) unit-norm descriptors.

    The per-image median foreground depth of :func:`~bodycorr.models.inputs.depth_to_input` is
    computed without a Python loop so it traces into the graph: invalid pixels are set to +inf,
    each image is sorted and the lower median (torch.median's) read at index ``(n - 1) // 2``.
    """

    def __init__(self, net: DescriptorNet):
        super().__init__()
        self.net = net

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        valid = depth > 0
        flat = torch.where(valid, depth, torch.full_like(depth, float("inf"))).flatten(1)
        n = valid.flatten(1).sum(1)
        k = ((n - 1).clamp(min=0) // 2)[:, None]
        med = flat.sort(dim=1).values.gather(1, k)[:, 0]
        med = torch.where(n > 0, med, torch.zeros_like(med))
        x = torch.where(valid, (depth - med[:, None, None]) * DEPTH_SCALE, torch.zeros_like(depth))
        x = torch.stack([x, valid.to(depth.dtype)], dim=1)
        return F.normalize(self.net.backbone(x), dim=1)  # DescriptorNet.forward without its Python input check


class SurfaceGraph(nn.Module):
    """The image network as the library runs it: :meth:`SurfaceNet.predict` in one module.

    rgb: (B, 3, H, W) float32 in [0, 1] (the ImageNet mean/std normalisation is inside the network).
    Returns ``colour`` (B, H, W, 3) code in [0, 255], ``confidence`` (B, H, W) in [0, 1] and
    ``silhouette`` (B, H, W) person probability, equal to ``net.predict(rgb, window=window,
    foreground=foreground, dilate=dilate)``: the argmax level of each colour channel refined over
    ``argmax +- window`` levels; with ``foreground`` set, colour and confidence are 0 outside the
    silhouette (probability > foreground) grown by ``dilate`` pixels, and only those pixels are
    classified (as predict does; ONNX NonZero + ScatterND). They are classified at once (predict works
    in chunks): the 3 x 256 scores take 3 KB per classified pixel of memory.
    """

    def __init__(self, net: SurfaceNet, foreground: float | None = 0.5, window: int = 4, dilate: int = 2):
        super().__init__()
        self.net = net
        self.foreground = foreground
        self.window = window
        self.dilate = dilate

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.net(rgb)
        b, c, h, w = out.features.shape
        sil = out.silhouette[:, 0].sigmoid()
        flat = out.features.permute(0, 2, 3, 1).reshape(-1, c)
        if self.foreground is None:
            colour, confidence = self._decode(flat)
            return colour.reshape(b, h, w, 3), confidence.reshape(b, h, w), sil
        m = (sil > self.foreground).to(rgb.dtype)[:, None]
        if self.dilate > 0:
            m = F.max_pool2d(m, 2 * self.dilate + 1, stride=1, padding=self.dilate)
        keep = m.reshape(-1).nonzero()[:, 0]  # only these pixels are classified (ONNX NonZero, dynamic length)
        col, conf = self._decode(flat.index_select(0, keep))
        colour = torch.zeros(b * h * w, 3, dtype=col.dtype).index_put((keep,), col)
        confidence = torch.zeros(b * h * w, dtype=conf.dtype).index_put((keep,), conf)
        return colour.reshape(b, h, w, 3), confidence.reshape(b, h, w), sil

    def _decode(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C) features -> (N, 3) colour, (N,) confidence, as SurfaceNet.predict."""
        logits = self.net.classifier(flat).unflatten(-1, (3, LEVELS))  # (N, 3, 256)
        lse = logits.logsumexp(-1, keepdim=True)
        idx = logits.argmax(-1, keepdim=True) + torch.arange(-self.window, self.window + 1)
        inside = (idx >= 0) & (idx < LEVELS)
        idx = idx.clamp(0, LEVELS - 1)
        p = (logits.gather(-1, idx) - lse).exp() * inside
        mass = p.sum(-1)
        return (p * idx).sum(-1) / mass.clamp_min(1e-12), mass.mean(-1)


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the .onnx file. model_name, task: "depth" or "surface".
        input: name and layout of the graph's input; outputs: names and layouts.
        dynamic: the axes left free in the graph; min_size: smallest H and W the graph accepts.
        working_size: the square side the model was trained at (the file's meta, else 128).
        max_abs_diff: per checked (H, W): per output, max |onnxruntime - PyTorch| (empty: not checked).
        seconds: export and check time.
    """

    path: Path
    model_name: str
    task: str
    input: str
    outputs: tuple[str, ...]
    dynamic: str
    min_size: int
    working_size: int
    max_abs_diff: dict
    seconds: float

    def __str__(self) -> str:
        checks = "; ".join(f"{h}x{w}: " + ", ".join(f"{k} {v:.1e}" for k, v in d.items()) for (h, w), d in self.max_abs_diff.items())
        return (f"wrote {self.path}: {self.model_name} ({self.task}), input {self.input}, outputs {', '.join(self.outputs)}; "
                f"dynamic {self.dynamic}, H and W >= {self.min_size} (trained at {self.working_size}x{self.working_size})"
                + (f"; max |onnxruntime - PyTorch|: {checks}" if checks else ""))  # fmt: skip


def _linspace_pm1(n: int | torch.Tensor, device=None) -> torch.Tensor:
    """``torch.linspace(-1, 1, n)`` bit for bit (``zeros(1)`` for n = 1) from traceable ops.

    torch's CPU kernel computes ``fma(step, i, -1)`` for the first half and ``fma(-step, n - 1 - i, 1)``
    for the second (step = 2 / (n - 1) in float32); a product of two float32 is exact in float64, so
    doing the products and sums in float64 and rounding once reproduces it (checked for n < 600).
    The exporter's own linspace (start + i * step in float32) is one ulp off for some n.
    """
    n = torch.as_tensor(n, device=device)
    nf = n.to(torch.float32)
    step = (torch.full_like(nf, 2.0) / (nf - 1)).double()
    i = torch.arange(n, device=device, dtype=torch.float64)
    lo = (step * i - 1.0).float()
    hi = (1.0 - step * (nf.double() - 1 - i)).float()
    v = torch.where(i < torch.div(n, 2, rounding_mode="floor"), lo, hi)
    return torch.where(nf > 1, v, torch.zeros_like(v))


def _position_code(h, w, dim, device=None, dtype=None) -> torch.Tensor:
    """:func:`bodycorr.models.blocks.sincos_position_2d` bit for bit, traceable for any (h, w)."""
    q = int(dim) // 4
    freqs = math.pi * (2.0 ** torch.arange(q, device=device, dtype=torch.float32)) / 2.0
    yy, xx = torch.meshgrid(_linspace_pm1(h, device), _linspace_pm1(w, device), indexing="ij")
    ay = yy.reshape(-1, 1) * freqs
    ax = xx.reshape(-1, 1) * freqs
    pe = torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1)
    return pe.to(dtype) if dtype is not None else pe


@contextlib.contextmanager
def _traceable_positions():
    """Swap the U-Net bottleneck's position code for :func:`_position_code` while tracing.

    The code's frequencies reach pi * 2**(C/4 - 1) (2**47 for the shipped 192-wide bottleneck), so its
    high channels depend on the last bit of the linspace: the tracer's own linspace gives descriptors
    0.1 away at most sizes. The swap keeps the graph exact at every size, one bottleneck cell included.
    """
    from bodycorr.models import blocks

    original = blocks.sincos_position_2d
    blocks.sincos_position_2d = _position_code
    try:
        yield
    finally:
        blocks.sincos_position_2d = original


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise BodycorrError(f"ONNX export: the Python package {module!r} is not installed. {_INSTALL}") from None


def _min_size(net: nn.Module, task: str) -> int:
    if task == "surface":
        return 8  # SurfaceNet._check_rgb
    return int(getattr(net, "min_size", 1))


class TwoPassGroupNorm(nn.Module):
    """GroupNorm with float64 statistics and a two-pass variance, for export (the parameters of ``gn``).

    The tracer writes nn.GroupNorm as InstanceNormalization, and onnxruntime sums its float32
    statistics over a group (C / G x H x W values) with errors that grow with the image: the shipped
    depth model's descriptors came out 7.7e-5 (128x128) to 3.5e-3 (512x520) away from PyTorch, whose
    reductions are pairwise. The same sums in float64 keep them within 7e-6.
    x: (B, C, *) -> same shape.
    """

    def __init__(self, gn: nn.GroupNorm):
        super().__init__()
        self.groups, self.eps, self.affine = gn.num_groups, gn.eps, gn.affine
        self.weight, self.bias = gn.weight, gn.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        g = x.reshape(b, self.groups, -1).double()
        d = g - g.mean(-1, keepdim=True)
        y = (d / torch.sqrt((d * d).mean(-1, keepdim=True) + self.eps)).float().reshape(x.shape)
        if self.affine:
            shape = (1, -1) + (1,) * (x.ndim - 2)
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y


def _for_export(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with every nn.GroupNorm replaced by :class:`TwoPassGroupNorm`."""
    net = copy.deepcopy(net)
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.GroupNorm):
                setattr(parent, name, TwoPassGroupNorm(child))
    return net.eval()


def onnx_graph(net: nn.Module, foreground: float | None = 0.5) -> tuple[nn.Module, str, tuple[str, ...]]:
    """(graph module, input name, output names) for a registered depth or surface network (``net`` is not modified)."""
    task = model_task(getattr(net, "model_name", ""))
    if task == "depth":
        if not isinstance(net, DescriptorNet):
            raise BodycorrError(f"ONNX export: {type(net).__name__} is not a DescriptorNet. Export a model built by create_model().")
        return DepthGraph(_for_export(net)).eval(), "depth", ("descriptors",)
    if not isinstance(net, SurfaceNet):
        raise BodycorrError(f"ONNX export: {type(net).__name__} is not a SurfaceNet. Export a model built by create_model().")
    return SurfaceGraph(_for_export(net), foreground).eval(), "rgb", ("colour", "confidence", "silhouette")


def example_input(task: str, hw: tuple[int, int], batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A deterministic input: depth (B, H, W) metres (a noisy ellipse at ~2.5 m, 0 around it) or rgb (B, 3, H, W) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    if task == "surface":
        return torch.rand(batch, 3, h, w, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    inside = (yy / 0.8) ** 2 + (xx / 0.45) ** 2 < 1
    depth = 2.5 + 0.15 * (1 - yy**2 - xx**2) + 0.02 * torch.randn(batch, h, w, generator=g)
    return torch.where(inside, depth, torch.zeros(()))


@torch.no_grad()
def reference_outputs(net: nn.Module, x: torch.Tensor, foreground: float | None = 0.5) -> dict[str, np.ndarray]:
    """The library's PyTorch inference on ``x`` (as :func:`example_input`), named like the graph's outputs."""
    if model_task(net.model_name) == "depth":
        return {"descriptors": net(depth_to_input(x)).numpy()}
    p = net.predict(x, foreground=foreground)
    return {"colour": p.colour.numpy(), "confidence": p.confidence.numpy(), "silhouette": p.silhouette.numpy()}


def run_onnx(model: bytes | str | Path, x: torch.Tensor | np.ndarray, threads: int = 2) -> dict[str, np.ndarray]:
    """Run an exported graph in onnxruntime (CPU, ``threads`` threads) -> {output name: array}."""
    ort = _require("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    src = model if isinstance(model, bytes) else str(model)
    sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    a = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)
    outs = sess.run(None, {sess.get_inputs()[0].name: a.astype(np.float32)})
    return {o.name: v for o, v in zip(sess.get_outputs(), outs)}


def _trace_size(net: nn.Module, size: int, min_size: int) -> tuple[int, int]:
    """The (H, W) to trace at: not square, not multiples of the strides (so padding is traced), and for
    the ViT a token grid other than its positional grid, so the (then exact) interpolation of the
    positions is part of the graph and every size works."""
    h, w = max(size, min_size) + 3, max(size, min_size) + 5
    if isinstance(net, BodyMapViT):
        m = 2 * net.config.patch
        while -(-h // m) * 2 == net.config.pos_grid or -(-w // m) * 2 == net.config.pos_grid:
            h, w = h + m, w + m
    return h, w


def _check_out(out: str | Path) -> Path:
    p = Path(out)
    if p.suffix.lower() != ".onnx":
        raise BodycorrError(f"ONNX export {p}: the output must be a .onnx file. Give a path like model.onnx.")
    if p.is_dir():
        raise BodycorrError(f"ONNX export {p}: is a folder. Give a file path ending in .onnx.")
    ensure_dir(p.parent if str(p.parent) else ".")
    return p


def export_onnx(model: nn.Module | str | Path, out: str | Path, *, size: int | None = None, verify: bool = True,
                foreground: float | None = 0.5, check_sizes: tuple[tuple[int, int], ...] | None = None) -> OnnxExport:  # fmt: skip
    """Export a depth or image network (a model file or a module from create_model) to ONNX.

    The graph holds what the library runs around the network (:class:`DepthGraph`,
    :class:`SurfaceGraph`): input ``depth`` (B, H, W) metres -> ``descriptors`` (B, D, H, W), or input
    ``rgb`` (B, 3, H, W) in [0, 1] -> ``colour`` (B, H, W, 3), ``confidence`` (B, H, W), ``silhouette``
    (B, H, W). Batch, height and width are dynamic for every registered architecture (the ViT pads to
    its patch grid and interpolates its positions inside the graph); H, W >= ``min_size`` of the report.
    Framing (the depth crop, the image letterbox and its two passes) stays with the caller.

    Exporter: the TorchScript tracer (``torch.onnx.export(..., dynamo=False)``, opset 17). The
    torch.export-based exporter (torch 2.13's default) specialises the U-Net's size arithmetic (the
    aligned-upsampling crops and the bottleneck's position code raise constraint violations for a
    dynamic height and width) and takes ~15 s against ~2 s; the tracer records the same arithmetic
    as shape ops. Its Python-level branches on sizes are fixed at trace time, hence ``min_size``.

    ``verify``: before writing, run the graph in onnxruntime at the working size (square) and one odd
    non-square size (or ``check_sizes``) and compare with the PyTorch inference; a difference above
    :data:`TOLERANCE` raises and nothing is written. ``size``: working size (default: the model
    file's meta, else 128). ``foreground``: the image graph's silhouette threshold (ImageMapper's 0.5;
    None = classify every pixel).
    """
    t0 = time.perf_counter()
    onnx = _require("onnx")
    if verify:
        _require("onnxruntime")
    p = _check_out(out)
    meta: dict = {}
    if isinstance(model, nn.Module):
        net = model.eval()
        source = getattr(net, "model_name", type(net).__name__)
    else:
        net = load_model_file(model)
        meta = read_torch_file(model, "model file").get("meta", {})
        source = str(model)
    task = model_task(getattr(net, "model_name", ""))
    working = int(size if size is not None else meta.get("size", 128))
    min_size = _min_size(net, task)
    if working < min_size:
        raise BodycorrError(f"ONNX export: size {working} is below the model's minimum {min_size}. Give --size {min_size} or more.")
    graph, in_name, out_names = onnx_graph(net, foreground)
    trace_hw = _trace_size(net, working, min_size)
    x = example_input(task, trace_hw)
    names = {in_name: {0: "batch", 1 + (task == "surface"): "height", 2 + (task == "surface"): "width"}}
    for o in out_names:
        names[o] = {0: "batch", 1: "height", 2: "width"} if o != "descriptors" else {0: "batch", 2: "height", 3: "width"}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), _traceable_positions():
        warnings.simplefilter("ignore")  # TracerWarnings on the size checks, the tracer's deprecation notice
        try:
            torch.onnx.export(graph, (x,), buf, dynamo=False, opset_version=OPSET, input_names=[in_name],
                              output_names=list(out_names), dynamic_axes=names, do_constant_folding=True)  # fmt: skip
        except TypeError as e:  # a torch without the TorchScript exporter
            raise BodycorrError(f"ONNX export: this torch ({torch.__version__}) lacks the TorchScript exporter ({e}). Use torch 2.13 as pinned.") from None
    proto = onnx.load_from_string(buf.getvalue())
    info = {
        "bodycorr_model": getattr(net, "model_name", ""), "bodycorr_task": task, "source": source,
        "input": f"{in_name} " + ("(B, H, W) float32 metres, 0 = no data, person framed as in training" if task == "depth"
                                  else "(B, 3, H, W) float32 RGB in [0, 1]"),
        "outputs": "descriptors (B, D, H, W) unit norm" if task == "depth" else
                   "colour (B, H, W, 3) code in [0, 255]; confidence (B, H, W); silhouette (B, H, W) probability",
        "min_size": str(min_size), "working_size": str(working), "exporter": f"torch {torch.__version__} TorchScript tracer, opset {OPSET}",
    }  # fmt: skip
    if task == "surface":
        info["foreground"] = "none" if foreground is None else str(foreground)
    for k, v in info.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    diffs: dict = {}
    if verify:
        sizes = check_sizes or ((working, working), (working + 13, max(working - 19, min_size)))
        for hw in sizes:
            xi = example_input(task, tuple(hw), batch=2, seed=1)
            ref = reference_outputs(net, xi, foreground)
            got = run_onnx(data, xi)
            diffs[tuple(hw)] = {k: float(np.abs(got[k] - ref[k]).max()) for k in out_names}
            bad = {k: v for k, v in diffs[tuple(hw)].items() if not v <= TOLERANCE[k]}
            if bad:
                raise BodycorrError(
                    f"ONNX export of {source}: onnxruntime differs from PyTorch at {hw[0]}x{hw[1]} "
                    f"({', '.join(f'{k} {v:.2e} > {TOLERANCE[k]:.0e}' for k, v in bad.items())}); {p} was not written. "
                    "Report it with the model file and the versions of torch and onnxruntime."
                )
    write_bytes_atomic(p, data)
    dynamic = "batch, height, width"
    layout_in = info["input"]
    return OnnxExport(p, info["bodycorr_model"], task, layout_in, out_names, dynamic, min_size, working, diffs, time.perf_counter() - t0)
