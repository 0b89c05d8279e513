"""CPU speed of the shipped networks in PyTorch against their ONNX export in onnxruntime.

Per row: ms per image (median and fastest of ``--repeats`` runs after a warm-up, batch 1, the two
runtimes taking turns) of the
library's PyTorch inference (depth: ``net(depth_to_input(depth))``; image: ``net.predict(rgb,
foreground=0.5)`` as ImageMapper runs it) and of the exported graph (:mod:`bodycorr.models.export`,
the same computation) in onnxruntime, both on ``--threads`` threads; the speed-up (PyTorch median /
onnxruntime median) and the max |onnxruntime - PyTorch| on that input.

    .venv/bin/python bench/bench_export.py [--threads 2] [--repeats 20]

Needs the 'export' extra (onnx, onnxruntime). Wall-clock numbers depend on what else runs on the
machine: the load average is printed first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from bodycorr.models.export import example_input, export_onnx, reference_outputs
from bodycorr.models.io import load_model_file

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "bodycorr" / "weights"
ROWS = [("depth-unet.pt", "depth", 256), ("depth-unet.pt", "depth", 128), ("bodymap-vit.pt", "surface", 128)]


def interleaved_times(fns: list, repeats: int) -> list[tuple[float, float]]:
    """(median, fastest) seconds of each of ``fns``, run in turn ``repeats`` times after a warm-up, so a
    change of load on the machine hits all of them alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [(statistics.median(t), min(t)) for t in times]


def bench_row(file: str, task: str, size: int, folder: Path, threads: int, repeats: int) -> dict:
    path = folder / f"{Path(file).stem}.onnx"
    if not path.exists():
        export_onnx(WEIGHTS / file, path, verify=False)
    net = load_model_file(WEIGHTS / file)
    x = example_input(task, (size, size), batch=1, seed=3)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x.numpy()}
    names = [o.name for o in sess.get_outputs()]
    ref = reference_outputs(net, x)
    got = dict(zip(names, sess.run(None, feed)))
    diff = max(float(np.abs(got[k] - ref[k]).max()) for k in names)
    (torch_med, torch_min), (ort_med, ort_min) = interleaved_times([lambda: reference_outputs(net, x), lambda: sess.run(None, feed)], repeats)
    return {"model": f"{file} ({task})", "size": size, "torch": (torch_med, torch_min), "ort": (ort_med, ort_min),
            "speedup": torch_med / ort_med, "diff": diff, "outputs": ", ".join(names)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}, onnxruntime {ort.__version__}, "
          f"{args.threads} threads, batch 1, median (fastest) of {args.repeats} runs")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_row(*r, Path(tmp), args.threads, args.repeats) for r in ROWS]
    head = f"{'model':<30} {'size':>7} {'PyTorch ms':>16} {'onnxruntime ms':>16} {'speed-up':>8} {'max |diff|':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        t, o = r["torch"], r["ort"]
        print(f"{r['model']:<30} {r['size']:>3}x{r['size']:<3} {t[0] * 1e3:>8.1f} ({t[1] * 1e3:5.1f}) {o[0] * 1e3:>8.1f} ({o[1] * 1e3:5.1f})"
              f" {r['speedup']:>7.2f}x {r['diff']:>10.1e}")  # fmt: skip
    print("max |diff| over the outputs: descriptors (unit vectors); image: colour code levels (0-255), confidence, silhouette")


if __name__ == "__main__":
    main()
