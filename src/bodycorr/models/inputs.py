"""Network input from depth: per-image normalised depth plus a foreground mask channel."""

from __future__ import annotations

import torch

DEPTH_SCALE = 2.0  # metres -> network units: a body spans about ±0.5 m around its median depth


def depth_to_input(depth: torch.Tensor) -> torch.Tensor:
    """Normalise depth maps for the descriptor networks.

    Args:
        depth: (B, H, W) or (B, 1, H, W) metres, 0 = no data.
    Returns:
        (B, 2, H, W) float32: [(depth − median foreground depth) · 2, foreground mask].
        Absolute distance is removed, so a person reads the same at 1.5 m and at 4 m.
    """
    if depth.ndim == 4:
        if depth.shape[1] != 1:
            raise ValueError(f"depth must be (B, 1, H, W) or (B, H, W), got {tuple(depth.shape)}")
        depth = depth[:, 0]
    if depth.ndim != 3:
        raise ValueError(f"depth must be (B, 1, H, W) or (B, H, W), got {tuple(depth.shape)}")
    depth = depth.float()
    valid = depth > 0
    if depth.is_cuda:  # one sort for the whole batch: no per-image host round trips
        med = foreground_median(depth, valid)
    else:
        b = depth.shape[0]
        med = torch.zeros(b, device=depth.device)
        for i in range(b):  # nanmedian would need a copy with NaNs; B is small
            v = depth[i][valid[i]]
            if v.numel():
                med[i] = v.median()
    x = torch.where(valid, (depth - med[:, None, None]) * DEPTH_SCALE, torch.zeros_like(depth))
    return torch.stack([x, valid.float()], dim=1)


def foreground_median(depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B,) median of each image's ``valid`` pixels, 0 for an image without any: the values
    ``depth[i][valid[i]].median()`` gives (the lower of the two middle values for an even count),
    from one batched sort. depth: (B, H, W) float; valid: (B, H, W) bool."""
    b = depth.shape[0]
    n = valid.reshape(b, -1).sum(1)
    v = torch.where(valid, depth, torch.full_like(depth, float("inf"))).reshape(b, -1).sort(dim=1).values
    med = v.gather(1, ((n - 1).clamp(min=0) // 2)[:, None])[:, 0]
    return torch.where(n > 0, med, torch.zeros_like(med))
