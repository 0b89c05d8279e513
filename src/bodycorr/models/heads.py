"""Cosine classification heads on top of unit descriptors (Wei et al. 2016, Sec. 4.2).

The paper trains the descriptor tower through classification: one layer per segmentation of each
person (500 patches each) and one shared layer for the 33 key points, with softmax losses. Here each
layer is a cosine classifier, ``logits = s * normalize(W) @ normalize(desc)``, so the classes live on
the same unit sphere as the descriptors and nearest-neighbour matching in descriptor space agrees
with what the heads were trained on. The heads are for training only; inference uses descriptors.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bodycorr.common.errors import BodycorrError

__all__ = ["CosineClassifier", "MultiTaskHeads"]


# Cosine heads only use the direction of each class weight, and an Adam step moves a weight by about
# the learning rate whatever its size: the angle a step turns is lr / |w|. Unit-variance weights
# (|w| = 4 in 16-D) would turn about 20x slower than these, and each of the 100 segmentation heads
# sees only a few % of the batches, so they would barely move from their random start.
HEAD_INIT_STD = 0.05

def _check_pixels(desc: torch.Tensor, dim: int, what: str) -> None:
    if not isinstance(desc, torch.Tensor) or desc.ndim != 2 or desc.shape[1] != dim:
        got = tuple(desc.shape) if isinstance(desc, torch.Tensor) else type(desc).__name__
        raise BodycorrError(f"{what}: desc must be (N, {dim}), got {got}. Gather descriptor pixels first.")


class CosineClassifier(nn.Module):
    """``logits = scale * normalize(W) @ normalize(desc)``; W: (num_classes, dim).

    forward(desc): (N, D) -> (N, num_classes), or per pixel (B, D, H, W) -> (B, num_classes, H, W).
    """

    def __init__(self, dim: int, num_classes: int, scale: float = 16.0):
        super().__init__()
        if dim < 1 or num_classes < 1:
            raise BodycorrError(f"CosineClassifier: dim={dim}, num_classes={num_classes} must be >= 1.")
        self.dim, self.num_classes, self.scale = dim, num_classes, float(scale)
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * HEAD_INIT_STD)

    def forward(self, desc: torch.Tensor) -> torch.Tensor:
        w = F.normalize(self.weight, dim=1)
        if desc.ndim == 4 and desc.shape[1] == self.dim:
            return self.scale * torch.einsum("cd,bdhw->bchw", w, F.normalize(desc, dim=1))
        _check_pixels(desc, self.dim, "CosineClassifier")
        return self.scale * F.normalize(desc, dim=1) @ w.t()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_classes={self.num_classes}, scale={self.scale}"


class MultiTaskHeads(nn.Module):
    """One cosine head per segmentation (K x P classes) plus a key-point head (num_keypoints + 1),
    and optionally a dense head (one class per template sample point, ``num_dense``).

    The K segmentation heads are ONE parameter ``weight: (K, P, D)``. Class ``num_keypoints`` of the
    key-point head is background. ``num_segmentations`` or ``num_keypoints`` may be 0 (head absent).
    """

    def __init__(
        self, dim: int, num_segmentations: int, num_patches: int, num_keypoints: int, scale: float = 16.0,
        global_dim: int = 0, num_dense: int = 0, dense_scale: float = 24.0,
    ):
        super().__init__()
        if dim < 1 or num_segmentations < 0 or num_patches < 1 or num_keypoints < 0 or num_dense < 0:
            raise BodycorrError(
                f"MultiTaskHeads: dim={dim}, num_segmentations={num_segmentations}, num_patches={num_patches}, "
                f"num_keypoints={num_keypoints}, num_dense={num_dense}: need dim, num_patches >= 1 and counts >= 0."
            )
        self.dim, self.num_segmentations, self.num_patches = dim, num_segmentations, num_patches
        self.num_keypoints, self.scale = num_keypoints, float(scale)
        self.weight = nn.Parameter(torch.randn(num_segmentations, num_patches, dim) * HEAD_INIT_STD)
        self.keypoint = CosineClassifier(dim, num_keypoints + 1, scale) if num_keypoints > 0 else None
        # image-level chirality (which side of the image the person's left is on), from pooled backbone features
        self.chirality = nn.Linear(global_dim, 2) if global_dim > 0 else None
        # the dense objective: one unit embedding per template sample point, every pixel classified against all;
        # its logit scale is learnt (from dense_scale), as the spread of neighbouring points on the sphere is not known ahead
        self.dense = CosineClassifier(dim, num_dense, dense_scale) if num_dense > 0 else None
        self.dense_log_scale = nn.Parameter(torch.zeros(())) if num_dense > 0 else None

    def logits(
        self, desc: torch.Tensor, task_ids: torch.Tensor, method: Literal["group", "gather"] = "group"
    ) -> torch.Tensor:
        """Patch logits of each pixel under its own segmentation: desc (N, D), task_ids (N,) -> (N, P).

        ``method="group"`` sorts pixels by task and runs one (n_k, D) @ (D, P) matmul per task present:
        memory O(N * P). ``"gather"`` builds ``weight[task_ids]``: (N, P, D) and one einsum: simpler
        but memory O(N * P * D) (1 GB for 32k pixels, P=500, D=16), so only for small N.
        """
        _check_pixels(desc, self.dim, "MultiTaskHeads.logits")
        n = desc.shape[0]
        if not isinstance(task_ids, torch.Tensor) or task_ids.shape != (n,) or task_ids.is_floating_point():
            got = tuple(task_ids.shape) if isinstance(task_ids, torch.Tensor) else type(task_ids).__name__
            raise BodycorrError(f"MultiTaskHeads.logits: task_ids must be integer (N,) = ({n},), got {got}.")
        if self.num_segmentations == 0:
            raise BodycorrError("MultiTaskHeads.logits: no segmentation heads (num_segmentations=0).")
        if n == 0:
            return desc.new_zeros(0, self.num_patches)
        lo, hi = int(task_ids.min()), int(task_ids.max())
        if lo < 0 or hi >= self.num_segmentations:
            raise BodycorrError(
                f"MultiTaskHeads.logits: task ids span [{lo}, {hi}], need [0, {self.num_segmentations - 1}]."
            )
        desc = F.normalize(desc, dim=1)
        task_ids = task_ids.long()
        if method == "gather":
            w = F.normalize(self.weight[task_ids], dim=2)  # (N, P, D)
            return self.scale * torch.einsum("nd,npd->np", desc, w)
        if method != "group":
            raise BodycorrError(f"MultiTaskHeads.logits: method={method!r}; use 'group' or 'gather'.")
        order = torch.argsort(task_ids, stable=True)
        tasks, counts = torch.unique_consecutive(task_ids[order], return_counts=True)
        w = F.normalize(self.weight[tasks], dim=2)  # (U, P, D): only the tasks present
        chunks = desc[order].split(counts.tolist())
        out_sorted = torch.cat([c @ w[i].t() for i, c in enumerate(chunks)])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n, device=order.device)
        return self.scale * out_sorted[inverse]

    def keypoint_logits(self, desc: torch.Tensor) -> torch.Tensor:
        """Key-point logits: (N, D) -> (N, num_keypoints + 1) (or per pixel (B, D, H, W) -> (B, K+1, H, W))."""
        if self.keypoint is None:
            raise BodycorrError("MultiTaskHeads.keypoint_logits: no key-point head (num_keypoints=0).")
        return self.keypoint(desc)

    def dense_logits(self, desc: torch.Tensor) -> torch.Tensor:
        """Logits against the dense template points: (N, D) -> (N, S); the scale is ``dense_scale * exp(dense_log_scale)``
        (learnt, at most e^2 times the start)."""
        if self.dense is None or self.dense_log_scale is None:
            raise BodycorrError("MultiTaskHeads.dense_logits: no dense head (num_dense=0).")
        return self.dense(desc) * self.dense_log_scale.clamp(max=2.0).exp()

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_segmentations={self.num_segmentations}, num_patches={self.num_patches}, "
            f"num_keypoints={self.num_keypoints}, scale={self.scale}"
        )
