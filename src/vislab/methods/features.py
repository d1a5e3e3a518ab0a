"""CNN features from any named layer, extracted fast (no file I/O: :mod:`vislab.feature_cache`
caches them on disk, :mod:`vislab.data.image_files` decodes the images).

The transfer-learning recipe of Chatfield et al. (2014, "Return of the devil in the details"):
run a frozen ImageNet network on every image, read the output of one layer (VGG16 relu7: 4096-d)
and L2-normalise it, ``f / ||f||_2``, before a linear classifier.

Shapes: images (N, 3, H, W) in pixel space [0,1] -> per layer (N, D) float32. A 4-D layer output
(N, C, h, w) becomes (N, C) by global average (``pool="avg"``) or max pooling, or (N, C*h*w) with
``pool="flatten"``.

Speed on CPU: ``torch.inference_mode``, channels_last tensors (what oneDNN's convolutions want),
bf16 autocast (AMX / AVX512-BF16 units), batches decoded by DataLoader workers while the network
runs, and :class:`~vislab.models.taps.LayerTap` stopping the forward pass at the deepest layer
asked for. Several layers come out of one pass.
"""
from __future__ import annotations

import copy
import hashlib
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..models.backbones import Backbone, PixelModel
from ..models.fold import fold_batchnorm
from ..models.layout import in_layout
from ..models.taps import LayerTap
from ..precision import autocast, precision_name, resolve_precision


# --- small numerical pieces ----------------------------------------------------------------

def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows divided by their L2 norm (a zero row stays zero): (N, D) -> (N, D) float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


def pool_output(t: torch.Tensor, pool: str = "avg") -> torch.Tensor:
    """A layer output -> (N, D): (N, C, h, w) pooled over space (avg/max) or flattened; 2-D as is."""
    if t.ndim == 2:
        return t
    if t.ndim == 4 and pool == "avg":
        return t.mean(dim=(2, 3))
    if t.ndim == 4 and pool == "max":
        return t.amax(dim=(2, 3))
    if pool not in ("avg", "max", "flatten"):
        raise ValueError(f"pool {pool!r}: use avg, max or flatten")
    return t.flatten(1)


def weights_digest(net: torch.nn.Module) -> str:
    """SHA-256 of a network's parameters and buffers (names, shapes, values): the cache key of
    its weights, whatever their origin (package, torchvision, state-dict file, seeded random init)."""
    h = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# --- the network part ----------------------------------------------------------------------

def inplace_activations(net: nn.Module, paths: Sequence[str], input_size: int) -> tuple[nn.Module, int]:
    """A copy of ``net`` whose activations (ReLU, ReLU6, ...) run in place, except where that would
    overwrite the output of a tapped layer (``paths``).

    vislab's backbones switch in-place activations off so that hooks see true outputs; for
    extraction, where only ``paths`` are read, writing in place saves one large allocation per
    activation -- on CPU each one costs page faults and zeroing (about +20 % images/s for VGG16).
    Checked on a random input: any difference in the tapped outputs returns ``net`` unchanged.
    Returns (network, activations switched)."""
    candidates = [m for m in net.modules() if getattr(m, "inplace", None) is False]
    if not candidates:
        return net, 0
    fast = copy.deepcopy(net).eval()
    tapped_storage: set[int] = set()
    unsafe: set[int] = set()
    mods = dict(fast.named_modules())

    def tap_hook(_m, _inputs, output):
        if torch.is_tensor(output):
            tapped_storage.add(output.untyped_storage().data_ptr())

    def act_hook(m, inputs):
        if inputs and torch.is_tensor(inputs[0]) and inputs[0].untyped_storage().data_ptr() in tapped_storage:
            unsafe.add(id(m))

    x = torch.rand(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    x = x.to(next(net.parameters()).device)
    hooks = [mods[p].register_forward_hook(tap_hook) for p in paths]
    hooks += [m.register_forward_pre_hook(act_hook) for m in fast.modules() if getattr(m, "inplace", None) is False]
    try:
        with torch.no_grad():
            LayerTap(fast, list(paths))(x)
    finally:
        for h in hooks:
            h.remove()
    n = 0
    for m in fast.modules():
        if getattr(m, "inplace", None) is False and id(m) not in unsafe:
            m.inplace = True
            n += 1
    with torch.no_grad():
        want, got = LayerTap(net, list(paths))(x), LayerTap(fast, list(paths))(x)
    if any(not torch.equal(want[p], got[p]) for p in paths):
        return net, 0
    return fast.requires_grad_(False), n


class FeatureExtractor:
    """A frozen backbone read at ``layers`` (friendly names or module paths), in pixel space.

    ``extractor(x)`` with x (N, 3, H, W) in [0,1] -> {layer: (N, D) float32 tensor on CPU}.
    """

    def __init__(self, backbone: Backbone, layers: Sequence[str], *, precision: str = "auto",
                 pool: str = "avg", channels_last: bool = True, fold_bn: bool = True,
                 bf16_weights: bool = False, inplace: bool = True, device: torch.device | str = "cpu"):
        self.backbone, self.layers = backbone, list(layers)
        self.paths = [backbone.module_path(layer) for layer in self.layers]
        self.device = torch.device(device)
        self.dtype = resolve_precision(precision, self.device)  # None: fp32
        self.precision = precision_name(self.dtype)
        self.pool, self.channels_last = pool, channels_last
        net, self.folded_bn = backbone.net, 0
        if fold_bn:
            net, self.folded_bn = fold_batchnorm(backbone.net, backbone.preprocess.input_size, keep=self.paths)
        self.inplace_acts = 0
        if inplace:
            net, self.inplace_acts = inplace_activations(net, self.paths, backbone.preprocess.input_size)
        # bf16 weights instead of autocast: autocast re-casts every fp32 weight on every batch,
        # which for VGG16's 124M fully-connected weights is a large share of the time.
        self.bf16_weights = bf16_weights and self.dtype == torch.bfloat16
        if self.bf16_weights:
            net = (copy.deepcopy(net) if net is backbone.net else net).to(torch.bfloat16)
        model = PixelModel(net, backbone.preprocess.mean, backbone.preprocess.std).eval().to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._tap = LayerTap(model, self.paths, root=net)
        self._weights_digest: str | None = None

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        if self.bf16_weights:
            x = x.to(torch.bfloat16)
        x = in_layout(x, self.channels_last)
        with torch.inference_mode(), autocast(self.device, None if self.bf16_weights else self.dtype):
            out = self._tap(x)
        return {layer: pool_output(out[path], self.pool).float().cpu()
                for layer, path in zip(self.layers, self.paths)}

    def key_fields(self, layer: str, resize: str) -> dict:
        """Everything besides the images that determines the features of ``layer`` (beyond rounding):
        with the dataset's content, the cache key (:mod:`vislab.feature_cache`)."""
        pre = self.backbone.preprocess
        if self._weights_digest is None:
            self._weights_digest = weights_digest(self.backbone.net)
        return {
            "model": self.backbone.name, "weights": self._weights_digest,
            "layer": self.backbone.module_path(layer), "pool": self.pool, "precision": self.precision,
            "resize": resize, "input_size": pre.input_size, "resize_to": pre.resize, "mean": list(pre.mean),
            "std": list(pre.std), "interpolation": pre.interpolation, "grayscale": "repeat",
            **({"bf16_weights": True} if self.bf16_weights else {}),
            # Not in the key: BN folding, batch size, workers -- they change features by rounding only,
            # and folding depends on which *other* layers are tapped in the same pass.
        }
