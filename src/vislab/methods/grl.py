"""Gradient Reversal Layer and the DANN schedules (Ganin & Lempitsky, ICML 2015).

GRL: forward ``R(x) = x``; backward ``dR/dx = -lambda * I``. Placed between the feature extractor
and the domain classifier, it makes one SGD step minimise the domain loss for the classifier and
*maximise* it for the features (the min-max game, without alternating updates).

Schedules, with ``p`` the training progress in [0, 1]:
- lambda_p = 2 / (1 + exp(-gamma * p)) - 1: the paper uses gamma = 10, the course gamma = 2;
  a constant lambda is also possible (lambda = 1 from the start is known to collapse);
- lr_p = lr0 / (1 + alpha * p) ** beta with lr0 = 0.01, alpha = 10, beta = 0.75.
"""
from __future__ import annotations

import math

import torch

# gamma of the two named sigmoid schedules
SCHEDULE_GAMMA = {"paper": 10.0, "course": 2.0}


class GradientReversal(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by ``-lambda``.

    ``lambda`` is a Python float (not a tensor): it is a schedule value, never learned.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, lambda_: float) -> torch.Tensor:  # type: ignore[override]
        ctx.lambda_ = float(lambda_)
        # view_as: a new tensor object, so autograd records this node even though data is shared
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad.neg() * ctx.lambda_, None


def grad_reverse(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """Apply the GRL to ``x`` (any shape): returns ``x``; gradients come back times ``-lambda_``."""
    return GradientReversal.apply(x, lambda_)


def sigmoid_ramp(p: float, gamma: float) -> float:
    """``2 / (1 + exp(-gamma * p)) - 1``: 0 at p = 0, tends to 1; gamma sets how fast."""
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def grl_lambda(p: float, schedule: str = "paper", gamma: float | None = None, constant: float = 1.0,
               scale: float = 1.0) -> float:
    """The GRL factor at progress ``p`` in [0, 1].

    ``schedule``: 'paper' (gamma 10), 'course' (gamma 2), 'constant' (``constant`` throughout).
    ``gamma`` overrides the named schedule's gamma; ``scale`` multiplies the sigmoid ramp (its
    final value).
    """
    if not 0.0 <= p <= 1.0 + 1e-9:
        raise ValueError(f"training progress p={p} must lie in [0, 1]")
    if schedule == "constant":
        return float(constant)
    if schedule not in SCHEDULE_GAMMA:
        raise ValueError(f"lambda schedule {schedule!r}: use one of paper, course, constant")
    g = SCHEDULE_GAMMA[schedule] if gamma is None else gamma
    return scale * sigmoid_ramp(p, g)


def dann_lr(p: float, lr0: float = 0.01, alpha: float = 10.0, beta: float = 0.75) -> float:
    """The DANN learning-rate annealing ``lr0 / (1 + alpha * p) ** beta``."""
    if not 0.0 <= p <= 1.0 + 1e-9:
        raise ValueError(f"training progress p={p} must lie in [0, 1]")
    return lr0 / (1.0 + alpha * p) ** beta
