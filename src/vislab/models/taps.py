"""Reading intermediate layers of a network with forward hooks.

``LayerTap(model, paths, root)`` runs ``model`` and returns the outputs of the modules of ``root``
(default: ``model`` itself; e.g. ``backbone.net`` inside a pixel-space wrapper) at ``paths``, and
stops the forward pass as soon as the last of them has been computed: extracting relu7 of VGG16
does not pay for fc8, extracting pool5 does not pay for the classifier.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class _Done(Exception):
    pass


class LayerTap:
    def __init__(self, model: nn.Module, paths: Sequence[str], root: nn.Module | None = None,
                 stop_early: bool = True):
        self.model, self.root = model, model if root is None else root
        self.paths, self.stop_early = list(paths), stop_early
        if len(set(self.paths)) != len(self.paths):
            raise ValueError(f"duplicate layers in {self.paths}")

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        captured: dict[str, torch.Tensor] = {}

        def hook_for(path: str):
            def hook(_module, _inputs, output):
                captured[path] = output
                if self.stop_early and len(captured) == len(self.paths):
                    raise _Done

            return hook

        handles = [self.root.get_submodule(p).register_forward_hook(hook_for(p)) for p in self.paths]
        try:
            self.model(x)
        except _Done:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = [p for p in self.paths if p not in captured]
        if missing:
            raise RuntimeError(f"layers {missing} were not reached by the forward pass")
        return {p: captured[p] for p in self.paths}
