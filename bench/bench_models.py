"""Benchmark every registered depth descriptor network at its default config (CPU).

Prints per model: parameters (shipped backbone, and the training heads), state-dict size in MB
(float32 / float16, shipped = without heads), forward GMAC per image (load-independent), and the
img/s (median, and fastest run) of inference and of a full train step (forward, segmentation + key-point cosine heads
on sampled foreground pixels, backward, AdamW step), batch 8, at 128x128 and 256x256.

    .venv/bin/python bench/bench_models.py [--threads 2] [--repeats 5] [--sizes 128 256]

Wall-clock numbers depend on what else runs on the machine: the load average is printed first.
"""

from __future__ import annotations

import argparse
import io
import os

import torch
import torch.nn.functional as F
from timing import run_times

from bodycorr.models import checkpoint_dict, create_model, list_models

# The paper's training heads: 100 segmentations x 500 patches, 33 key points.
HEADS = {"num_segmentations": 100, "num_patches": 500, "num_keypoints": 33}
PIXELS_PER_IMAGE = 1024


def state_mb(state: dict, half: bool) -> float:
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.tell() / 2**20


def gmac(model: torch.nn.Module, size: int) -> float:
    total = [0]

    def conv(mod, _i, out):
        total[0] += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]

    def lin(mod, _i, out):
        total[0] += out.numel() * mod.in_features

    hooks = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks += [m.register_forward_hook(lin) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        model(torch.zeros(1, model.in_channels, size, size))
    for h in hooks:
        h.remove()
    return total[0] / 1e9


def fake_batch(b: int, size: int) -> torch.Tensor:
    mask = torch.zeros(b, 1, size, size)
    mask[:, :, size // 8 : -size // 8, size // 3 : -size // 3] = 1
    return torch.cat([0.2 * torch.randn(b, 1, size, size) * mask, mask], dim=1)


def bench_model(name: str, sizes: list[int], batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    net = create_model(name, **HEADS)
    shipped = checkpoint_dict(net, include_heads=False)["state_dict"]
    n_backbone = sum(p.numel() for p in net.backbone.parameters())
    n_heads = sum(p.numel() for p in net.heads.parameters())
    row = {
        "name": name,
        "params": n_backbone,
        "heads": n_heads,
        "mb32": state_mb(shipped, half=False),
        "mb16": state_mb(shipped, half=True),
        "mb32_heads": state_mb(net.state_dict(), half=False),
    }
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for size in sizes:
        row[f"gmac{size}"] = gmac(net.eval(), size)
        x = fake_batch(batch, size)
        fg = x[:, 1].bool()

        def infer():
            with torch.inference_mode():
                net(x)

        def train():
            desc = net(x).permute(0, 2, 3, 1)[fg]  # (N_fg, D)
            idx = torch.randint(0, desc.shape[0], (batch * PIXELS_PER_IMAGE,))
            pix = desc[idx]
            task = torch.randint(0, HEADS["num_segmentations"], (pix.shape[0],))
            loss = F.cross_entropy(net.heads.logits(pix, task), torch.randint(0, HEADS["num_patches"], task.shape))
            kp = net.heads.keypoint_logits(pix)
            loss = loss + F.cross_entropy(kp, torch.randint(0, HEADS["num_keypoints"] + 1, task.shape))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        net.eval()
        row[f"infer{size}"] = tuple(batch / t for t in run_times(infer, repeats))
        net.train()
        row[f"train{size}"] = tuple(batch / t for t in run_times(train, repeats))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--models", nargs="+", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, {args.repeats} runs, "
        f"load average {load:.2f} on {os.cpu_count()} cores"
    )
    rows = [bench_model(n, args.sizes, args.batch, args.repeats) for n in (args.models or list_models("depth"))]
    head = f"{'model':<12} {'params':>8} {'MB f32':>7} {'MB f16':>7} {'heads':>7}"
    for s in args.sizes:
        head += f" {'GMAC@' + str(s):>9} {'infer@' + str(s):>13} {'train@' + str(s):>13}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        line = f"{r['name']:<12} {r['params'] / 1e6:>7.2f}M {r['mb32']:>7.2f} {r['mb16']:>7.2f} {r['heads'] / 1e6:>6.2f}M"
        for s in args.sizes:
            inf, tr = (f"{r[k + str(s)][0]:.1f} ({r[k + str(s)][1]:.1f})" for k in ("infer", "train"))
            line += f" {r[f'gmac{s}']:>9.3f} {inf:>13} {tr:>13}"
        print(line)
    print(
        "params/MB: shipped backbone (checkpoint_dict(include_heads=False)); heads: training-only cosine heads "
        f"{HEADS}. GMAC: forward multiply-adds per image.\ninfer/train: img/s, median (fastest run); "
        "the machine is shared, so the fastest run is the better estimate when the load average is high."
    )


if __name__ == "__main__":
    main()
