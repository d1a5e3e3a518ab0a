"""Mixed precision in one place: the ``--precision`` option's dtype and the autocast context."""
from __future__ import annotations

import contextlib

import torch


def amp_dtype(precision: str) -> torch.dtype | None:
    """``"bf16"`` -> ``torch.bfloat16``; anything else (``"fp32"``) -> None (no autocast)."""
    return torch.bfloat16 if precision == "bf16" else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast context for a network's forward pass; a no-op when ``dtype`` is None or float32."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
