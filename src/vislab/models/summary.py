"""Per-layer summary of a network: output shapes and where the parameters are."""
from __future__ import annotations

import dataclasses
from collections import defaultdict

import torch
from torch import nn


@dataclasses.dataclass
class LayerRow:
    name: str  # friendly name when the backbone has one, else the module path
    path: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int
    share: float  # of the network's total


def layer_table(net: nn.Module, example: torch.Tensor, names: dict[str, str] | None = None) -> list[LayerRow]:
    """One row per module that is a leaf or owns parameters directly, in execution order.

    Each parameter is counted once, by the module that owns it (``recurse=False``), so the rows
    add up to the network's total. ``example``: one input batch, e.g. ``(1, 3, 224, 224)``.
    """
    names = names or {}
    total = sum(p.numel() for p in net.parameters())
    rows: dict[str, LayerRow] = {}
    handles = []
    for path, module in net.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        is_leaf = next(module.children(), None) is None
        if not path or not (is_leaf or own):
            continue

        def hook(_m, _inp, out, path=path, module=module, own=own):
            if path in rows:  # a module used twice keeps its first shape
                return
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
            rows[path] = LayerRow(names.get(path, path), path, type(module).__name__, shape, own,
                                  own / total if total else 0.0)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            net(example)
    finally:
        for h in handles:
            h.remove()
    # Modules that own parameters but never ran (unused heads) still count towards the total.
    for path, module in net.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if path and own and path not in rows:
            rows[path] = LayerRow(names.get(path, path), path, type(module).__name__, None, own, own / total)
    return list(rows.values())


def params_by_type(rows: list[LayerRow]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for r in rows:
        if r.params:
            totals[r.type] += r.params
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

