"""Frozen training configuration, loadable from named JSON configs in ``configs/``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bodycorr.common.errors import BodycorrError
from bodycorr.data.views import ViewConfig, view_config_dict
from bodycorr.training.targets import TargetConfig

CONFIG_DIRS = (Path(__file__).resolve().parents[3] / "configs", Path(__file__).resolve().parents[1] / "configs")


def config_from_dict(cls: type, d: dict[str, Any], what: str, nested: dict[str, type]) -> Any:
    """Build the frozen dataclass ``cls`` from plain JSON data: unknown keys raise one line naming
    ``what``; the ``nested`` keys become their dataclasses (JSON lists back to tuples)."""
    d = dict(d)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise BodycorrError(f"{what}: unknown keys {sorted(unknown)}. Known keys: {sorted(known)}.")
    for key, sub in nested.items():
        if key in d:
            d[key] = sub(**{k: tuple(v) if isinstance(v, list) else v for k, v in d[key].items()})
    return cls(**d)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (stored in every checkpoint).

    Attributes:
        model: registry name (``bodycorr.models.list_models()``); ``model_args`` its overrides.
        heads_per_image: segmentation tasks applied to each image's pixels (Wei et al. pick one
            task per sample; several per image train much faster).
        pixels_per_image: foreground pixels sampled per image for the losses.
        view: how the depth views are made (:class:`~bodycorr.data.views.ViewConfig`); clothed
            people: ``"view": {"clothed_share": 0.5}`` in a config file (and optionally
            ``"garments": {...}``, :class:`~bodycorr.render.garments.GarmentConfig`); off by default.
        data: "onthefly" renders fresh people every step; "shards" reads ``bodycorr generate`` output.
        val_views: fixed validation views (val identities) for the matching error in the log.
        init: a run's ``last.pt`` (or a model file with heads) whose weights start a fresh run
            (fine-tuning with a new schedule); ignored when the run resumes from its own checkpoint.
        seg_weight, dense_weight: weights of the patch-segmentation ensemble (Wei et al.) and of the
            dense objective (``targets.dense_points`` template points, every pixel classified
            against all of them with geodesically softened targets, in the spirit of continuous
            surface embeddings); a loss whose targets are absent is skipped.
        max_cpu_s: stop once the run has used this many CPU seconds (its own process and its data
            workers, counted across resumes); 0 = no limit. For learning curves at equal CPU time.
        snapshot_cpu_s: keep the inference model every this many CPU seconds in
            ``snapshots/cpu_<seconds>.pt``; 0 = none.
    """

    name: str = "custom"
    model: str = "unet"
    model_args: dict = field(default_factory=dict)
    targets: TargetConfig = TargetConfig()
    view: ViewConfig = ViewConfig(size=128)
    data: Literal["onthefly", "shards"] = "onthefly"
    shards: str = ""
    batch_size: int = 16
    steps: int = 20000
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.02
    pixels_per_image: int = 384
    heads_per_image: int = 8
    keypoint_weight: float = 0.5
    parts_weight: float = 1.0
    chirality_weight: float = 0.5
    workers: int = 1
    threads: int = 1
    seed: int = 0
    log_every: int = 25
    val_every: int = 500
    ckpt_every: int = 100
    val_views: int = 32
    device: Literal["auto", "cpu", "cuda"] = "auto"
    init: str = ""
    seg_weight: float = 1.0
    dense_weight: float = 0.0
    max_cpu_s: float = 0.0
    snapshot_cpu_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data of the config; the view's clothing keys only when clothing is on (so a run
        written before they existed still resumes: :func:`~bodycorr.data.views.view_config_dict`)."""
        d = dataclasses.asdict(self)
        d["view"] = view_config_dict(self.view)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "TrainConfig":
        return config_from_dict(TrainConfig, d, "training config", {"targets": TargetConfig, "view": ViewConfig})

    def replace(self, **kw: Any) -> "TrainConfig":
        return dataclasses.replace(self, **kw)


def load_config(name_or_path: str) -> TrainConfig:
    """A named config (``configs/<name>.json``) or a JSON file path.

    Keys starting with ``_`` are comments and ignored. A config with ``"task": "surface"`` is an image-to-surface (BodyMap) run and loads as
    :class:`bodycorr.training.surface.SurfaceTrainConfig`.
    """
    p = Path(name_or_path)
    candidates = [p] if p.suffix == ".json" else [d / f"{name_or_path}.json" for d in CONFIG_DIRS]
    for c in candidates:
        if c.is_file():
            try:
                d = json.loads(c.read_text())
            except json.JSONDecodeError as e:
                raise BodycorrError(f"training config {c}: not valid JSON ({e.msg}, line {e.lineno}). Fix the file.") from None
            d = {k: v for k, v in d.items() if not k.startswith("_")}  # "_comment" keys document a config file
            d.setdefault("name", c.stem)
            if d.get("task") == "surface":
                from bodycorr.training.surface import SurfaceTrainConfig

                return SurfaceTrainConfig.from_dict(d)  # type: ignore[return-value]
            return TrainConfig.from_dict(d)
    names = sorted({f.stem for d in CONFIG_DIRS if d.is_dir() for f in d.glob("*.json")})
    raise BodycorrError(f"training config {name_or_path!r}: not found. Named configs: {', '.join(names) or 'none'}; or give a .json path.")
