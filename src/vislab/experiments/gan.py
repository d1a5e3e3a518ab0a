"""``vislab gan``: DCGAN / conditional DCGAN on MNIST (SPEC Part D), measured with FID/KID.

Commands (``vislab gan`` alone trains; the other actions are its sub-commands, one module each)::

    vislab gan --model dcgan|cdcgan --data-root DIR --out OUT     train, then measure
    vislab gan sample --run OUT --out S                           grid from a trained generator
    vislab gan interpolate --run OUT --out I                      alpha*z1 + (1-alpha)*z2 strips
    vislab gan compare --data-root DIR --out C                    train the course variants, one table

A training run writes ``grids/`` (G(z_test) every ``--grid-every`` batches and at each epoch end),
``curves.png`` (D and G losses, D(x) and D(G(z))), ``history.json`` (per batch), ``samples.png``,
``interpolation.png``, ``generator.pt`` and ``metrics.json`` (fid, kid, fid_real_baseline,
class_histogram, g_grad_norm_first_100_mean, fid_curve with ``--fid-every`` and, for the cDCGAN,
conditional_accuracy). The training runs through :func:`vislab.training.fit`: a
checkpoint at each epoch end, ``--max-minutes`` / ``--stop-after-batches`` pause it, and
``--resume`` continues exactly where it stopped.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..config import COMMANDS, RunConfig, add_command, config_from_args, option, resume_identity
from ..distributed import sync_batchnorm
from ..errors import UserError
from ..runs import Run

CHECKPOINT = "checkpoint.pt"


@dataclass
class GanConfig(RunConfig):
    """Training options; the defaults are the course settings of SPEC Part D."""

    model: Literal["dcgan", "cdcgan"] = option("dcgan", "dcgan (unconditional) or cdcgan (conditioned on the digit)")
    data_root: str | None = option(None, "folder with the MNIST IDX files (default: download into the vislab cache)",
                                   resume_safe=True)
    epochs: int = option(5, "passes over the training set", min=1)
    batch_size: int = option(128, "images per batch", min=1)
    nz: int = option(100, "size of the noise vector z ~ N(0, I)", min=1)
    ngf: int = option(32, "generator width (DCGAN: 4ngf-2ngf-ngf channels; cDCGAN: 8ngf per branch)", min=1)
    ndf: int = option(32, "discriminator width (DCGAN: ndf-2ndf-4ndf channels; cDCGAN: 2ndf per branch)", min=1)
    lr_d: float = option(2e-4, "Adam learning rate of the discriminator", min=0, min_exclusive=True)
    lr_g: float = option(5e-4, "Adam learning rate of the generator", min=0, min_exclusive=True)
    beta1: float = option(0.5, "Adam beta1", min=0, max=1, max_exclusive=True)
    beta2: float = option(0.999, "Adam beta2", min=0, max=1, max_exclusive=True)
    g_loss: Literal["non-saturating", "minimax"] = option(
        "non-saturating", "generator loss: non-saturating -log D(G(z)) or the 'true' minimax log(1 - D(G(z)))")
    init: Literal["custom", "default"] = option(
        "custom", "weights: custom = DCGAN init N(0, 0.02), BatchNorm N(1, 0.02); default = PyTorch's")
    image_size: Literal[32, 64] = option(32, "image size; 64 adds one block to G and D")
    train_size: int = option(0, "use only the first N training images (0 = all 60,000); for quick tries", min=0)
    grid_every: int = option(200, "save a grid of G(z_test) every N batches (0 = only at epoch ends)", min=0,
                             resume_safe=True)
    eval_samples: int = option(10000, "generated (and real) images for FID / KID / conditional accuracy", min=2,
                               resume_safe=True)
    precision: Literal["auto", "bf16", "fp32"] = option(
        "auto", "bf16 = autocast the networks to bfloat16 (losses stay float32); fp32 = plain float32; auto = "
                "bf16 where the device runs it natively (AVX512-BF16/AMX CPUs, recent GPUs), else fp32")
    classifier_epochs: int = option(3, "epochs of the MNIST classifier whose features FID/KID use (cached; more "
                                       "on a small training set, for at least 300 steps)", min=1,
                                    resume_safe=True)
    resume: bool = option(False, "continue the interrupted run left in OUT.partial from its last checkpoint")
    max_minutes: float = option(0.0, "stop training after this many minutes, keeping a checkpoint for --resume "
                                     "(0 = no limit)", min=0, resume_safe=True)
    train_only: Literal["both", "d", "g"] = option(
        "both", "update both networks, or only D or only G (the other keeps its initial weights; SPEC D1 ablations)")
    d_sees_label: bool = option(True, "cdcgan only: D gets the label y (false: D(x) only, no y branch; SPEC D7)")
    fid_every: int = option(0, "measure FID of --curve-samples generated images every N batches (0 = off)", min=0)
    curve_samples: int = option(1000, "generated and test images per point of the FID curve (--fid-every)",
                                min=2, max=10000)
    sync_bn: bool = option(False, "torchrun: BatchNorm statistics over every process's slice (SyncBatchNorm, CUDA)")
    stop_after_batches: int = option(0, "stop after this many batches in total, keeping a checkpoint for "
                                        "--resume (0 = train to the end)", min=0, resume_safe=True)


def _load_digits(cfg: GanConfig):
    """(the GAN's training digits: the first --train-size; every training digit, which the measuring
    classifier learns from whatever the GAN's budget; the test digits)."""
    from ..data.mnist import load_mnist

    full = load_mnist("train", cfg.data_root)
    train = type(full)(full.images[:cfg.train_size], full.labels[:cfg.train_size]) if cfg.train_size else full
    return train, full, load_mnist("test", cfg.data_root)


def _training_grid(gan, z_test: torch.Tensor, conditional: bool, path) -> None:
    from ..methods.gan import grid_inputs
    from ..reporting.figures.gan import image_grid

    z, y, nrow = grid_inputs(z_test[:10] if conditional else z_test, conditional)
    image_grid(gan.predict(z, None if y is None else y.to(z.device)), path, nrow)


def train_gan(cfg: GanConfig, run: Run, digits, make_curve=None):
    """Train per ``cfg`` inside ``run`` (resuming from its checkpoint when asked): the trained
    :class:`~vislab.methods.gan.GAN`, its :class:`~vislab.training.FitResult`, the per-batch history,
    the fixed noise of the grids and the FID curve points (``make_curve(gan)``: a
    :class:`~vislab.methods.gan_metrics.FidCurve`, or None for no curve)."""
    from ..methods.gan import GAN, BatchHistory
    from ..models.dcgan import build_gan
    from ..precision import resolve_precision
    from ..training import Checkpoint, Plan, fit

    conditional = digits.labels is not None
    g, d = build_gan(cfg.model, nz=cfg.nz, ngf=cfg.ngf, ndf=cfg.ndf, image_size=cfg.image_size, init=cfg.init)
    if not cfg.d_sees_label:  # the cDCGAN's G with the unconditional D (no y branch)
        d = build_gan("dcgan", nz=cfg.nz, ngf=cfg.ngf, ndf=cfg.ndf, image_size=cfg.image_size, init=cfg.init)[1]
    if cfg.sync_bn:
        g, d = sync_batchnorm(g, d, device=run.device)
    # channels_last: oneDNN's fast convolution layout (also on GPUs with tensor cores)
    g, d = (net.to(run.device, memory_format=torch.channels_last) for net in (g, d))
    gan = GAN(g, d, lr_g=cfg.lr_g, lr_d=cfg.lr_d, betas=(cfg.beta1, cfg.beta2), g_loss=cfg.g_loss,
              dtype=resolve_precision(cfg.precision, run.device), train_only=cfg.train_only,
              d_sees_label=cfg.d_sees_label)
    # One generator for data order and noise; the fixed grid noise comes first (a resumed run draws
    # it again, then the loop restores the generator's checkpointed state).
    rngs = {"data": torch.Generator().manual_seed(cfg.seed)}
    z_test = torch.randn(64, cfg.nz, generator=rngs["data"]).to(run.device)
    history = BatchHistory()
    curve = make_curve(gan) if make_curve is not None else None
    extras = {"history": history} if curve is None else {"history": history, "fid_curve": curve}

    def grid(name: str) -> None:
        _training_grid(gan, z_test, conditional, run.path(f"grids/{name}.png"))

    def before_epoch(epoch: int) -> None:
        if epoch == 0 and cfg.grid_every:  # only a fresh run starts epoch 0
            grid("step_000000")

    def on_step(step: int, stats: dict[str, float]) -> None:
        history.add(stats)
        if curve is not None:
            curve.on_step(step)
        if cfg.grid_every and step % cfg.grid_every == 0:
            grid(f"step_{step:06d}")

    def end_of_epoch(epoch: int, means: dict[str, float], train_seconds: float) -> dict:
        grid(f"epoch_{epoch + 1:02d}")
        return {**means, "train_seconds": train_seconds}

    result = fit(gan, digits, Plan(cfg.epochs, math.ceil(len(digits.x) / cfg.batch_size)), rngs=rngs,
                 checkpoint=Checkpoint(run.path(CHECKPOINT), resume_identity(cfg)), resume=run.resumed,
                 before_epoch=before_epoch, evaluate=end_of_epoch, extras=extras, on_step=on_step,
                 max_minutes=cfg.max_minutes, stop_after_steps=cfg.stop_after_batches, desc=f"{cfg.model} training")
    return gan, result, history.values, z_test, None if curve is None else curve.points


def _classifier(cfg: GanConfig, classifier_train, test):
    """The cached MNIST classifier of the measures, its feature module, test accuracy and cache key."""
    from ..models.mnist_classifier import ClassifierFeatures
    from .gan_store import cached_classifier

    clf, clf_acc, clf_key = cached_classifier(classifier_train.images, classifier_train.labels, test.images,
                                              test.labels, epochs=cfg.classifier_epochs, seed=0)
    return clf, ClassifierFeatures(clf), clf_acc, clf_key


def _fid_curve_factory(cfg: GanConfig, classifier_train, test, device):
    """``make_curve`` of :func:`train_gan` for ``--fid-every``: fixed z (and classes for the cDCGAN)
    of ``--curve-samples`` images against as many test images, on the classifier's features."""
    from ..methods.gan_metrics import FidCurve, extract_features
    from ..models.mnist_classifier import prepare_digits

    def make_curve(gan):
        _, feature, _, _ = _classifier(cfg, classifier_train, test)
        n = cfg.curve_samples
        reference = extract_features(feature, prepare_digits(test.images, 32)[:n])
        z = torch.randn(n, cfg.nz, generator=torch.Generator().manual_seed(cfg.seed + 3)).to(device)
        y = (torch.arange(n) % 10).to(device) if cfg.model == "cdcgan" else None
        return FidCurve(cfg.fid_every, gan.predict, feature, reference, (z, y))

    return make_curve


def evaluate(cfg: GanConfig, gan, classifier_train, test, x_all: torch.Tensor, device) -> dict[str, Any]:
    """FID / KID of ``eval_samples`` generated images against the test set, the same for the
    train set (real-vs-real baseline, cached), and the cDCGAN's conditional accuracy."""
    from ..methods.gan_metrics import real_baseline, sample_metrics
    from ..models.mnist_classifier import prepare_digits
    from .gan_store import cached_reference

    clf, feature, clf_acc, clf_key = _classifier(cfg, classifier_train, test)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    n = cfg.eval_samples
    z = torch.randn(n, cfg.nz, generator=gen).to(device)
    y = (torch.arange(n) % 10).to(device) if cfg.model == "cdcgan" else None
    fake = gan.predict(z, y).cpu()
    pick = torch.randperm(len(x_all), generator=gen)[:n]
    # the classifier works at 32x32; 64x64 images are resized by its feature module
    f_test, base = cached_reference(
        f"baseline-{clf_key}-n{n}-s{cfg.image_size}-seed{cfg.seed}-{len(x_all)}",
        lambda: real_baseline(feature, prepare_digits(test.images, 32)[:n], x_all.cpu()[pick], seed=cfg.seed))
    m = sample_metrics(feature, clf, f_test, base, fake, None if y is None else y.cpu(), seed=cfg.seed)
    return {**m, "eval_samples": len(fake), "eval_reference": f"MNIST test ({len(f_test)} images)",
            "real_baseline": f"{min(n, len(x_all))} MNIST train images vs the test reference",
            "classifier_test_accuracy": clf_acc}


def run_train(cfg: GanConfig) -> int:
    from ..models.mnist_classifier import prepare_digits
    from ..reporting.figures.gan import image_grid, training_curves
    from .gan_interpolate import interpolation_images
    from ..methods.gan import BatchHistory, Digits
    from .gan_store import save_generator

    if not cfg.d_sees_label and cfg.model != "cdcgan":
        raise UserError("--no-d-sees-label applies to --model cdcgan only (the DCGAN's D never sees a label)")
    with Run("gan", cfg, resume=cfg.resume) as run:
        train, all_train, test = _load_digits(cfg)
        conditional = cfg.model == "cdcgan"
        digits = Digits(prepare_digits(train.images, cfg.image_size).to(run.device),
                        train.labels.to(run.device) if conditional else None, cfg.batch_size, cfg.nz)
        make_curve = _fid_curve_factory(cfg, all_train, test, run.device) if cfg.fid_every else None
        gan, result, history, z_test, fid_curve = train_gan(cfg, run, digits, make_curve)
        t0 = time.perf_counter()
        m = evaluate(cfg, gan, all_train, test, digits.x, run.device)
        eval_seconds = time.perf_counter() - t0
        _training_grid(gan, z_test, conditional, run.path("samples.png"))
        image_grid(interpolation_images(gan.predict, cfg.nz, conditional, pairs=8, steps=10, label=-1,
                                        seed=cfg.seed + 2, device=run.device), run.path("interpolation.png"), 10)
        training_curves(history, f"{cfg.model}, {cfg.g_loss} G loss, nz={cfg.nz}", run.path("curves.png"))
        run.save_json("history.json", history)
        save_generator(run.path("generator.pt"), gan.g, model=cfg.model, nz=cfg.nz, ngf=cfg.ngf, ndf=cfg.ndf,
                       image_size=cfg.image_size)
        last, first_norms = result.history[-1], history["g_grad_norm"][:100]
        run.metrics.update(m)
        run.metrics.update({
            "batches": result.steps, "images_seen": result.steps * cfg.batch_size,
            "train_seconds": round(result.train_seconds, 2), "eval_seconds": round(eval_seconds, 2),
            "batches_per_second": round(result.steps / max(result.train_seconds, 1e-9), 2),
            "last_epoch_mean": {k: last[k] for k in BatchHistory.KEYS},
            # 0 in a finished run (the loop stops on a non-finite loss); reports state it
            "nonfinite_losses": sum(not math.isfinite(v) for v in history["loss_d"] + history["loss_g"]),
            "g_grad_norm_first_100_mean": sum(first_norms) / max(1, len(first_norms)),
        })
        if fid_curve is not None:
            run.metrics["fid_curve"] = fid_curve
        # kept until now so that a failed evaluation resumes without training again;
        # generator.pt is what sample / interpolate need
        run.path(CHECKPOINT).unlink(missing_ok=True)  # only rank 0 writes one under torchrun
        print(_summary(run.metrics))
    return 0


def _summary(m: dict[str, Any]) -> str:
    parts = [f"FID {m['fid']:.2f} (real-vs-real {m['fid_real_baseline']:.2f})", f"KID {m['kid']:.4f}"]
    if "conditional_accuracy" in m:
        parts.append(f"conditional accuracy {m['conditional_accuracy']:.3f}")
    parts.append(f"{m['batches']} batches in {m['train_seconds']:.1f} s")
    return "vislab gan: " + ", ".join(parts)


# -- CLI ---------------------------------------------------------------------------------------
def _refuse_training_options(cfg_cls: type, run):
    """Handler of an action. `vislab gan` both trains (its options) and has actions, so argparse
    accepts training options written before the action's name (``vislab gan --epochs 3 sample``)
    and would silently ignore them: they are refused instead."""
    train_only = {f.name for f in dataclasses.fields(GanConfig)} - {f.name for f in dataclasses.fields(cfg_cls)}

    def handler(args) -> int:
        stray = sorted(k for k in vars(args) if k in train_only)
        if stray:
            raise UserError(f"option(s) {', '.join('--' + s.replace('_', '-') for s in stray)} do not apply to "
                            f"`vislab gan {args.gan_action}`; see `vislab gan {args.gan_action} --help`")
        return run(config_from_args(cfg_cls, args))

    return handler


def register(subparsers) -> None:
    from .gan_compare import CompareConfig, run_compare
    from .gan_interpolate import InterpolateConfig, run_interpolate
    from .gan_sample import SampleConfig, run_sample

    parser = add_command(
        subparsers, "gan", GanConfig, run_train,
        help="GANs on MNIST: train a DCGAN / cDCGAN (default action), or sample / interpolate / compare",
        description="Train a DCGAN or conditional DCGAN on MNIST (32x32, [-1,1]) with the course settings and "
                    "measure it: FID and KID on the features of a vislab MNIST classifier, beside the "
                    "real-vs-real baseline, and for the cDCGAN the share of samples classified as the requested "
                    "digit. Without an ACTION, `vislab gan [options]` trains.")
    actions = parser.add_subparsers(dest="gan_action", metavar="[sample|interpolate|compare]", required=False,
                                    title="actions (instead of training)")
    for name, cls, fn, text in (
        ("sample", SampleConfig, run_sample,
         "grid of samples from a trained generator (cDCGAN: one column per z, one row per class)"),
        ("interpolate", InterpolateConfig, run_interpolate,
         "strips alpha*z1 + (1-alpha)*z2 from a trained generator"),
        ("compare", CompareConfig, run_compare,
         "train the course's variants (default, minimax loss, nz=10, nz=1000, ...) and write one table"),
    ):
        add_command(actions, name, cls, fn, help=text).set_defaults(handler=_refuse_training_options(cls, fn))
        COMMANDS[f"gan {name}"] = COMMANDS.pop(name)  # known by its command line, `vislab gan NAME`
