"""Model registry and factory (in the style of timm), plus checkpoint-dict helpers.

A builder is registered under a name and turns keyword overrides into a model::

    @register_model("unet", tiny={"base_width": 4})
    def unet(**overrides) -> nn.Module:
        return build(make_config(UNetConfig, "unet", overrides))

    model = create_model("unet", base_width=8)   # model.config, model.model_name are set
    list_models()                                 # ['unet', 'wei_alexnet']

Every model carries ``model.config`` (a frozen :class:`ModelConfig` dataclass) and
``model.model_name``, so ``create_model(model.model_name, **asdict(model.config))`` rebuilds it.
:func:`checkpoint_dict` / :func:`model_from_checkpoint_dict` use exactly that; file I/O is elsewhere.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal, Mapping, TypeVar

from torch import nn

from bodycorr.common.errors import BodycorrError

__all__ = [
    "ModelConfig",
    "make_config",
    "register_model",
    "create_model",
    "list_models",
    "model_task",
    "tiny_overrides",
    "checkpoint_dict",
    "model_from_checkpoint_dict",
]

C = TypeVar("C", bound="ModelConfig")
Task = Literal["depth", "surface"]


@dataclass(frozen=True)
class ModelConfig:
    """Base of all model configs: a frozen dataclass whose fields are type-checked on creation.

    Supported field types: ``int``, ``float`` (ints accepted), ``bool``, ``str``, ``Literal[...]``,
    ``tuple[int, ...]`` (lists accepted, so a JSON/``asdict`` round trip works) and ``X | None``.
    Subclasses add value checks in :meth:`check` (raise :class:`BodycorrError`).
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(type(self).__name__, f.name, getattr(self, f.name), hints[f.name])
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Value checks beyond types; override in subclasses."""

    def _fail(self, field: str, why: str) -> None:
        raise BodycorrError(f"{type(self).__name__}: {field}={getattr(self, field)!r} {why}.")


def _coerce(cls_name: str, name: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def bad(expected: str) -> BodycorrError:
        return BodycorrError(f"{cls_name}: {name}={value!r} is not {expected}. Fix the option {name!r}.")

    if origin is Literal:
        is_bool = isinstance(value, bool) and not any(isinstance(a, bool) for a in args)
        if is_bool or value not in args:
            raise bad("one of " + ", ".join(repr(a) for a in args))
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(cls_name, name, value, inner[0]) if len(inner) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad("a list or tuple")
        elem = args[0] if args else Any
        return tuple(_coerce(cls_name, f"{name}[{i}]", v, elem) for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    return value


def make_config(cls: type[C], model_name: str, overrides: Mapping[str, Any]) -> C:
    """Build ``cls(**overrides)``; an unknown option raises one line listing the known ones."""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise BodycorrError(
            f"model {model_name!r}: unknown option(s) {', '.join(unknown)}. Known options: {', '.join(known)}."
        )
    return cls(**overrides)


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Module]
    tiny: dict[str, Any]
    task: str


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, *, tiny: Mapping[str, Any] | None = None, task: Task = "depth") -> Callable:
    """Decorator registering ``builder(**overrides) -> nn.Module`` under ``name``.

    ``tiny``: overrides giving a very small variant (a few thousand parameters) used by the tests,
    which run over every registered model. ``task``: what the model maps: "depth" (depth map ->
    per-pixel descriptors) or "surface" (RGB image -> template surface colour code + silhouette).
    Registering a name twice raises.
    """

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise BodycorrError(f"model {name!r}: registered twice. Pick another name.")
        _REGISTRY[name] = _Entry(builder, dict(tiny or {}), task)
        return builder

    return deco


def _ensure_builtins() -> None:
    # Importing the module runs its @register_model decorators (lazy to avoid a circular import).
    import bodycorr.models.bodymap  # noqa: F401
    import bodycorr.models.descriptor  # noqa: F401


def list_models(task: Task | None = None) -> list[str]:
    """Sorted names of all registered models, or of those for one ``task``."""
    _ensure_builtins()
    return sorted(n for n, e in _REGISTRY.items() if task is None or e.task == task)


def model_task(name: str) -> Task:
    """The task ("depth" or "surface") model ``name`` was registered for."""
    return _entry(name).task  # type: ignore[return-value]


def _entry(name: str) -> _Entry:
    _ensure_builtins()
    if name not in _REGISTRY:
        raise BodycorrError(f"model {name!r}: unknown name. Known models: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def tiny_overrides(name: str) -> dict[str, Any]:
    """The overrides registered for a tiny test-size variant of model ``name``."""
    return dict(_entry(name).tiny)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build registered model ``name`` with config overrides; sets ``model.model_name``.

    Raises :class:`BodycorrError` for an unknown name (listing the known ones) or a bad option.
    """
    model = _entry(name).builder(**overrides)
    cfg = getattr(model, "config", None)
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise BodycorrError(f"model {name!r}: its builder did not set model.config to a dataclass. Fix the builder.")
    model.model_name = name
    return model


def checkpoint_dict(model: nn.Module, include_heads: bool = True) -> dict[str, Any]:
    """``{"name", "config", "state_dict"}`` for ``model``; ``config`` is ``asdict(model.config)``.

    ``include_heads=False`` drops the training-only classification heads (keys ``heads.*``) and zeroes
    ``num_segmentations`` / ``num_keypoints`` / ``num_dense`` in the stored config, for a small shipped model (models
    without such heads, e.g. the surface networks whose colour classifier is needed at inference, are
    stored whole).
    """
    name = getattr(model, "model_name", None)
    if name is None:
        raise BodycorrError("checkpoint: model has no model_name. Build it with create_model().")
    config = model.config
    state = model.state_dict()
    if not include_heads:
        names = {f.name for f in dataclasses.fields(config)}
        config = dataclasses.replace(config, **{k: 0 for k in ("num_segmentations", "num_keypoints", "num_dense") if k in names})
        if "chirality_head" in names:
            config = dataclasses.replace(config, chirality_head=False)
        state = {k: v for k, v in state.items() if not k.startswith("heads.")}
    return {"name": name, "config": asdict(config), "state_dict": dict(state)}


def model_from_checkpoint_dict(d: Mapping[str, Any]) -> nn.Module:
    """Rebuild a model from :func:`checkpoint_dict` output; returned in eval mode.

    Float16 state dicts load into the float32 model. Raises one line on missing keys, an unknown
    model name, or weights that do not fit the config.
    """
    if not isinstance(d, Mapping) or not {"name", "config", "state_dict"} <= set(d):
        got = sorted(d) if isinstance(d, Mapping) else type(d).__name__
        raise BodycorrError(
            f"checkpoint: expected keys name, config, state_dict, got {got}. Save it with checkpoint_dict()."
        )
    model = create_model(d["name"], **dict(d["config"]))
    try:
        result = model.load_state_dict(d["state_dict"], strict=False)
    except RuntimeError as e:  # shape mismatch
        first = str(e).strip().splitlines()[1:2] or [str(e)]
        raise BodycorrError(
            f"checkpoint for {d['name']!r}: weight shapes do not match the config ({first[0].strip()}). "
            "Use the config saved with these weights."
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise BodycorrError(
            f"checkpoint for {d['name']!r}: weights do not match the config "
            f"({len(result.missing_keys)} missing, e.g. {result.missing_keys[:2]}; "
            f"{len(result.unexpected_keys)} unexpected, e.g. {result.unexpected_keys[:2]}). "
            "Use the config saved with these weights."
        )
    return model.eval()
