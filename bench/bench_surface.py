"""Benchmark image-to-surface (BodyMap) inference on CPU: median ms per image at 128x128 and 256x256.

For every registered surface model at its default config, or for given model files, batch 1, on a
synthetic test view of a person: the network alone (``forward``), ``predict`` classifying every
pixel (3 x 256 levels each: on a CPU this costs more than the network), and ``predict`` classifying
only the silhouette (``foreground=0.5``, what ``bodycorr image`` and the benchmark use).

    .venv/bin/python bench/bench_surface.py [--threads 2] [--repeats 7] [--models FILE ...]

Wall-clock numbers depend on what else runs on the machine: the load average is printed first.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
from timing import run_times

from bodycorr.models import create_model, list_models
from bodycorr.models.io import load_model_file


def median_ms(fn, repeats: int) -> tuple[float, float]:
    med, fastest = run_times(fn, repeats)
    return med * 1000, fastest * 1000


def person_image(size: int) -> torch.Tensor:
    """(1, 3, size, size) a synthetic test view (test identities), resized."""
    from bodycorr.data.images import ImageConfig, ImageViewGenerator

    rgb = ImageViewGenerator(ImageConfig(size=128), "test", seed=0).view(0).rgb
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


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
    images = {s: person_image(s) for s in a.sizes}
    print(f"{'model':40s} {'params':>8s} {'size':>5s} {'forward':>9s} {'all px':>9s} {'person px':>10s}   (median ms, {a.repeats} runs)")
    with torch.no_grad():
        for name, net in nets:
            params = sum(p.numel() for p in net.parameters()) / 1e6
            for s, x in images.items():
                fwd, _ = median_ms(lambda: net(x), a.repeats)
                full, _ = median_ms(lambda: net.predict(x), a.repeats)
                fg, _ = median_ms(lambda: net.predict(x, foreground=0.5), a.repeats)
                print(f"{str(name)[-40:]:40s} {params:6.2f} M {s:5d} {fwd:9.1f} {full:9.1f} {fg:10.1f}")

if __name__ == "__main__":
    main()
