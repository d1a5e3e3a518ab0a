"""Standard adversarial attacks at a fixed L-inf budget in pixel units (question B7), one file per
attack as in torchattacks: :func:`fgsm` (Goodfellow et al. 2015) and :func:`pgd` (Madry et al.
2018), targeted or untargeted, on pixel-space models (images in [0, 1], logits out)."""
from .base import AttackResult
from .fgsm import fgsm
from .pgd import pgd

__all__ = ["AttackResult", "fgsm", "pgd"]
