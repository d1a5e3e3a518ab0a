"""Mixed precision in one place: the ``--precision`` option -> a dtype, and the autocast context.

Every caller goes through :func:`resolve_precision` (option + device -> dtype or None) and
:func:`autocast`; nothing else in vislab names ``torch.autocast`` or maps precision strings.
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "auto")


def bf16_is_native(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 natively: CUDA with bf16, or a CPU with AVX512-BF16/AMX (oneDNN)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """``"bf16"`` -> ``torch.bfloat16``; ``"fp32"`` -> None (no autocast); ``"auto"`` -> bf16 where
    :func:`bf16_is_native`, else None."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = "bf16" if bf16_is_native(device) else "fp32"
    return torch.bfloat16 if precision == "bf16" else None


def precision_name(dtype: torch.dtype | None) -> str:
    """The inverse of :func:`resolve_precision` for records: None -> ``"fp32"``, bfloat16 -> ``"bf16"``."""
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def resolved_precision_name(precision: str, device: torch.device) -> str:
    """``precision`` as it runs on ``device``: ``"auto"`` becomes ``"bf16"`` or ``"fp32"`` (for records)."""
    return precision_name(resolve_precision(precision, device))


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """Autocast context for a network's forward pass; a no-op when ``dtype`` is None or float32."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    device_type = device if isinstance(device, str) else device.type
    return torch.autocast(device_type=device_type, dtype=dtype)

