"""bodycorr.models: descriptor networks, training heads and the model registry.

    from bodycorr.models import create_model, list_models
    from bodycorr.models.inputs import depth_to_input
    net = create_model("unet")                       # or "wei_alexnet"; overrides as keywords
    desc = net(depth_to_input(depth))                 # (B, 2, H, W) -> (B, 16, H, W), unit norm
"""

from bodycorr.models.descriptor import (
    DescriptorConfig,
    DescriptorNet,
    UNetConfig,
    WeiAlexNetConfig,
)
from bodycorr.models.heads import CosineClassifier, MultiTaskHeads
from bodycorr.models.registry import (
    ModelConfig,
    checkpoint_dict,
    create_model,
    list_models,
    model_from_checkpoint_dict,
    model_task,
    register_model,
    tiny_overrides,
)

__all__ = [
    "CosineClassifier",
    "DescriptorConfig",
    "DescriptorNet",
    "ModelConfig",
    "MultiTaskHeads",
    "UNetConfig",
    "WeiAlexNetConfig",
    "checkpoint_dict",
    "create_model",
    "list_models",
    "model_from_checkpoint_dict",
    "model_task",
    "register_model",
    "tiny_overrides",
]
