"""Benchmark image-to-surface (BodyMap) inference on CPU: median ms per image at 128x128 and 256x256.

Times ``net.predict`` (network, per-pixel 3 x 256 classification, silhouette) for every registered
surface model at its default config, or for given model files, batch 1.

    .venv/bin/python bench/bench_surface.py [--threads 2] [--repeats 7] [--models FILE ...]

Wall-clock numbers depend on what else runs on the machine: the load average is printed first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from bodycorr.models import create_model, list_models
from bodycorr.models.io import load_model_file


def median_ms(net: torch.nn.Module, size: int, repeats: int) -> tuple[float, float]:
    x = torch.rand(1, 3, size, size)
    net.predict(x)  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        net.predict(x)
        ts.append((time.perf_counter() - t0) * 1000)
    return statistics.median(ts), min(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--models", nargs="+", help="model files (default: every registered surface model, untrained)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"load average {os.getloadavg()[0]:.2f}, torch threads {a.threads}")
    nets = [(m, load_model_file(m)) for m in a.models] if a.models else [(n, create_model(n).eval()) for n in list_models("surface")]
    for name, net in nets:
        params = sum(p.numel() for p in net.parameters()) / 1e6
        cells = []
        for s in a.sizes:
            med, best = median_ms(net, s, a.repeats)
            cells.append(f"{s}x{s}: {med:7.1f} ms (best {best:.1f})")
        print(f"{name:45s} {params:5.2f} M params  " + "   ".join(cells))


if __name__ == "__main__":
    main()
