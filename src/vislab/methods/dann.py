"""Domain-adaptation algorithms in the DomainBed style: ``update(batch) -> stats`` and ``predict(x)``.

Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015. With features
f = G_f(x), class logits G_y(f) and a domain logit G_d(R_lambda(f)) (R: gradient reversal), one SGD
step on

    L = CE(G_y(f_s), y_s) + BCE(G_d(R(f_s)), 1) + BCE(G_d(R(f_t)), 0)

trains G_y and G_d to minimise their losses while G_f minimises the class loss and *maximises*
the domain loss (scaled by lambda_p): features become label-discriminative and domain-invariant.

Every algorithm takes the same batch type, :class:`vislab.data.domains.DomainBatch`, and exposes
the same surface (``update``, ``predict``, ``predict_with_domain``, ``features``, ``state`` /
``load_state``). What an algorithm needs beyond source images and labels it declares in class
attributes, so that whoever builds the batches never asks which algorithm it feeds:
``uses_target_images``, ``uses_pseudo_labels`` and ``uses_target_labels`` (true only for
:class:`TargetOracle`, the labelled upper bound; no other algorithm reads target labels).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ..data.domains import DomainBatch
from ..models.layout import in_layout
from ..precision import autocast, resolve_precision
from .grl import dann_lr, grad_reverse, grl_lambda


@dataclasses.dataclass
class AdaptHParams:
    """Hyperparameters of the algorithms below (``vislab adapt`` declares them as options).

    ``clip_grad_norm`` None or 0: no clipping; ``ema_decay`` None or 0: predict with the raw weights;
    ``gamma`` None: the named ``lambda_schedule``'s own (see :func:`vislab.methods.grl.grl_lambda`).
    """

    lr: float = 0.01
    lr_alpha: float = 10.0
    lr_beta: float = 0.75
    momentum: float = 0.9
    weight_decay: float = 0.0
    lambda_schedule: str = "paper"
    gamma: float | None = None
    lambda_max: float = 1.0
    clip_grad_norm: float | None = None
    ema_decay: float | None = None
    grl: bool = True
    pl_weight: float = 1.0
    precision: str = "auto"  # bf16 where the device runs it natively (vislab.precision), else fp32
    channels_last: bool = True


def ema_with_warmup(decay: float):
    """``multi_avg_fn`` for :class:`torch.optim.swa_utils.AveragedModel`: an exponential moving
    average whose decay ramps up as min(decay, (1 + n) / (10 + n)) after n updates.

    Why the ramp (torch's ``get_ema_multi_avg_fn`` has none): with a fixed 0.999 the average after
    the first epoch (469 steps of source-only) still carries the random initial weights -- its
    source accuracy was 0.93 (seed 0) and 0.87 (seed 1), against 0.98 with the ramp. The ramp (TensorFlow's
    ``ExponentialMovingAverage(num_updates=...)``) lets it follow the weights early on and
    changes nothing later (0.999 from n = 8,991 on).
    """
    def update(ema_params, params, num_averaged):
        n = float(num_averaged)
        torch._foreach_lerp_(ema_params, params, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))

    return update


class Algorithm(nn.Module):
    """Base: holds the network, the SGD optimiser and the step counter that drives the schedules.

    ``total_steps`` is the planned number of ``update`` calls (progress p = step / total_steps).
    """

    uses_target_images = True
    uses_pseudo_labels = False
    uses_target_labels = False

    def __init__(self, net: nn.Module, hp: AdaptHParams, total_steps: int):
        super().__init__()
        if total_steps < 1:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        self.net, self.hp, self.total_steps = net, hp, total_steps
        self.compute_dtype = resolve_precision(hp.precision, next(net.parameters()).device)
        if hp.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(net.parameters(), lr=hp.lr, momentum=hp.momentum,
                                         weight_decay=hp.weight_decay)
        self.step = 0
        self.ema = None
        if hp.ema_decay:
            from torch.optim.swa_utils import AveragedModel

            self.ema = AveragedModel(net, multi_avg_fn=ema_with_warmup(hp.ema_decay))

    @property
    def eval_net(self) -> nn.Module:
        """The network that predicts: the weight average when ``ema_decay`` is set, else the raw one."""
        return self.ema.module if self.ema is not None else self.net

    # -- schedules (``p``: training progress in [0, 1]; None: the current one) ----------------------
    def progress(self) -> float:
        return min(self.step / self.total_steps, 1.0)

    def lr(self, p: float | None = None) -> float:
        return dann_lr(self.progress() if p is None else p, self.hp.lr, self.hp.lr_alpha, self.hp.lr_beta)

    def grl_lambda(self, p: float | None = None) -> float:
        hp = self.hp
        return grl_lambda(self.progress() if p is None else p, hp.lambda_schedule, hp.gamma, hp.lambda_max,
                          hp.lambda_max)

    # -- helpers -------------------------------------------------------------------------
    def _autocast(self, x: torch.Tensor):
        return autocast(x.device, self.compute_dtype)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return in_layout(x, self.hp.channels_last)

    def _sgd_step(self, loss: torch.Tensor) -> None:
        lr = self.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.hp.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.hp.clip_grad_norm)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.net)
        self.step += 1

    # -- prediction (with the evaluated weights, see eval_net) ---------------------------------
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, 10) float32 for normalised images (N, 3, 28, 28)."""
        with self._autocast(x):
            return self.eval_net.eval()(self._layout(x)).float()

    @torch.no_grad()
    def predict_with_domain(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (N, 10) and domain logits (N,) (positive: source), from one feature pass."""
        net = self.eval_net.eval()
        with self._autocast(x):
            f = net.features(self._layout(x))
            return net.classifier(f).float(), net.domain(f).float()

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """G_f features (N, 2352) float32."""
        with self._autocast(x):
            return self.eval_net.eval().features(self._layout(x)).float()

    # -- training ------------------------------------------------------------------------
    def update(self, batch: DomainBatch) -> dict[str, float]:
        raise NotImplementedError

    def state(self) -> dict:
        state = {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


class SourceOnly(Algorithm):
    """Empirical risk minimisation on labelled source data: the lower bound (no adaptation)."""

    uses_target_images = False

    def grl_lambda(self, p: float | None = None) -> float:
        return 0.0  # no domain classifier, nothing reversed

    def update(self, batch):
        self.net.train()
        with self._autocast(batch.xs):
            loss = F.cross_entropy(self.net(self._layout(batch.xs)).float(), batch.ys)
        self._sgd_step(loss)
        return {"loss_class": loss.item()}


class DANN(Algorithm):
    """DANN: source and target go through G_f in one batch; G_d sits behind the GRL."""

    def _losses(self, batch: DomainBatch, classify_target: bool = False):
        """(class logits, source class loss, domain loss, domain accuracy); the logits cover the
        target half too when ``classify_target``."""
        xs, xt = batch.xs, batch.xt
        ns = len(xs)
        lam = self.grl_lambda()
        with self._autocast(xs):
            f = self.net.features(self._layout(torch.cat([xs, xt])))
            logits = self.net.classifier(f if classify_target else f[:ns]).float()
            # --no-grl: the same three parts, but the features get the domain gradient un-reversed
            g = grad_reverse(f, lam) if self.hp.grl else grad_reverse(f, -lam)
            dlogits = self.net.domain(g).float()
        dlabels = torch.cat([torch.ones(ns, device=xs.device), torch.zeros(len(xt), device=xs.device)])
        loss_class = F.cross_entropy(logits[:ns], batch.ys)
        loss_domain = F.binary_cross_entropy_with_logits(dlogits, dlabels)
        dacc = ((dlogits > 0).float() == dlabels).float().mean()
        return logits, loss_class, loss_domain, dacc

    def update(self, batch):
        self.net.train()
        _, loss_class, loss_domain, dacc = self._losses(batch)
        self._sgd_step(loss_class + loss_domain)
        return {"loss_class": loss_class.item(), "loss_domain": loss_domain.item(), "domain_acc": dacc.item()}


class DANNPseudoLabel(DANN):
    """DANN plus cross-entropy on the target images that carry a pseudo-label (``pseudo`` >= 0).

    The pseudo-labels come from the model itself (:class:`vislab.methods.pseudo_label.PseudoLabeller`),
    so no target label is read; the class loss on them is averaged over the labelled ones, times
    ``pl_weight``. With ``xt_aug`` in the batch (randomly transformed copies of ``xt``, see
    :mod:`vislab.methods.augment`), that loss is taken on the transformed copies: one more
    forward/backward of the labelled target images, and what makes the pseudo-labels teach
    something (the untransformed confident images are already fitted).
    """

    uses_pseudo_labels = True

    def update(self, batch):
        self.net.train()
        pt = batch.pseudo
        mask = pt >= 0
        augmented = batch.xt_aug is not None
        logits, loss_class, loss_domain, dacc = self._losses(batch, classify_target=not augmented)
        ns = len(batch.xs)
        if not bool(mask.any()):
            loss_pl = logits.sum() * 0.0
        elif augmented:
            xa = batch.xt_aug[mask]
            with self._autocast(xa):
                loss_pl = F.cross_entropy(self.net(self._layout(xa)).float(), pt[mask])
        else:
            loss_pl = F.cross_entropy(logits[ns:][mask], pt[mask])
        self._sgd_step(loss_class + loss_domain + self.hp.pl_weight * loss_pl)
        return {"loss_class": loss_class.item(), "loss_domain": loss_domain.item(), "loss_pl": loss_pl.item(),
                "domain_acc": dacc.item()}


class TargetOracle(Algorithm):
    """UPPER BOUND, NOT ADAPTATION: trains on labelled source AND labelled target (``yt``)."""

    uses_target_labels = True

    def update(self, batch):
        self.net.train()
        with self._autocast(batch.xs):
            logits = self.net(self._layout(torch.cat([batch.xs, batch.xt]))).float()
        loss = F.cross_entropy(logits, torch.cat([batch.ys, batch.yt]))
        self._sgd_step(loss)
        return {"loss_class": loss.item()}


# the algorithm of each ``vislab adapt --mode``, in the order of its comparison tables
ALGORITHMS: dict[str, type[Algorithm]] = {
    "source-only": SourceOnly,
    "dann": DANN,
    "dann+pl": DANNPseudoLabel,
    "target-oracle": TargetOracle,
}
