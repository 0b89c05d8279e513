"""Model files: save a network atomically, load it back with one-line errors for bad files."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bodycorr.common.errors import BodycorrError, check_readable
from bodycorr.common.fileio import write_bytes_atomic
from bodycorr.models.registry import checkpoint_dict, model_from_checkpoint_dict

MODEL_FILE_FORMAT = 1


def save_model_file(model: nn.Module, path: str | Path, include_heads: bool = False, half: bool = True,
                    meta: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Write ``model`` for inference (heads dropped and float16 weights by default: small files)."""
    d = checkpoint_dict(model, include_heads=include_heads)
    if half:
        d["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in d["state_dict"].items()}
    d["format"] = MODEL_FILE_FORMAT
    d["meta"] = meta or {}
    buf = io.BytesIO()
    torch.save(d, buf)
    return write_bytes_atomic(path, buf.getvalue())


def read_torch_file(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """``torch.load`` with a one-line error for a missing, empty, truncated or foreign file."""
    p = check_readable(path, what)
    try:
        d = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # zip errors, unpickling errors, EOF
        raise BodycorrError(
            f"{what} {p}: cannot be read ({type(e).__name__}); the file is corrupt or not a bodycorr {what}. "
            "Re-download or retrain it."
        ) from None
    if not isinstance(d, dict):
        raise BodycorrError(f"{what} {p}: not a bodycorr {what} (holds a {type(d).__name__}).")
    return d


def load_model_file(path: str | Path, device: str = "cpu") -> nn.Module:
    """Load a model file or a training checkpoint (its ``model`` entry); returns an eval-mode model."""
    d = read_torch_file(path, "model file")
    entry = d.get("model", d)
    try:
        model = model_from_checkpoint_dict(entry)
    except BodycorrError as e:
        raise BodycorrError(f"model file {path}: {e}") from None
    return model.float().to(device).eval()
