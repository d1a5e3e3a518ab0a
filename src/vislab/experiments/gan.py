"""``vislab gan``: DCGAN / conditional DCGAN on MNIST (SPEC Part D), measured with FID/KID.

Commands (``vislab gan`` alone trains; the other actions are its sub-commands)::

    vislab gan --model dcgan|cdcgan --data-root DIR --out OUT     train, then measure
    vislab gan sample --run OUT --out S                           grid from a trained generator
    vislab gan interpolate --run OUT --out I                      alpha*z1 + (1-alpha)*z2 strips
    vislab gan compare --data-root DIR --out C                    train the course variants, one table

A training run writes ``grids/`` (G(z_test) every ``--grid-every`` batches and at each epoch end),
``curves.png`` (D and G losses, D(x) and D(G(z))), ``history.json``, ``samples.png``,
``interpolation.png``, ``generator.pt`` and ``metrics.json`` (fid, kid, fid_real_baseline and, for
the cDCGAN, conditional_accuracy). Checkpoints are written at each epoch end; ``--resume``
continues an interrupted run exactly where it stopped.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..config import RunConfig, add_command, build_config, config_from_args, option
from ..errors import UserError
from ..data.download import cache_dir
from ..io import atomic_path, load_checkpoint, torch_load, torch_save, write_json, write_text
from ..precision import amp_dtype
from ..progress import progress
from ..runs import PARTIAL_SUFFIX, Run, read_run_json

MODELS = ("dcgan", "cdcgan")


@dataclass
class GanConfig(RunConfig):
    """Training options; the defaults are the course settings of SPEC Part D."""

    model: Literal["dcgan", "cdcgan"] = option("dcgan", "dcgan (unconditional) or cdcgan (conditioned on the digit)")
    data_root: str | None = option(None, "folder with the MNIST IDX files (default: download into the vislab cache)")
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
    grid_every: int = option(200, "save a grid of G(z_test) every N batches (0 = only at epoch ends)", min=0, resume_safe=True)
    eval_samples: int = option(10000, "generated (and real) images for FID / KID / conditional accuracy", min=2)
    precision: Literal["bf16", "fp32"] = option(
        "bf16", "bf16 = autocast the networks to bfloat16 (losses stay float32); fp32 = plain float32")
    classifier_epochs: int = option(3, "epochs of the MNIST classifier whose features FID/KID use (cached)", min=1)
    resume: bool = option(False, "continue the interrupted run left in OUT.partial from its last checkpoint")
    max_minutes: float = option(0.0, "stop training after this many minutes, keeping a checkpoint for --resume "
                                     "(0 = no limit)", min=0, resume_safe=True)
    stop_after_batches: int = option(0, "stop after this many batches in total, keeping a checkpoint for "
                                        "--resume (0 = train to the end)", min=0, resume_safe=True)


@dataclass
class SampleConfig(RunConfig):
    """``vislab gan sample``: a grid from a trained generator."""

    run: str | None = option(None, "training run folder (or its generator.pt) to sample from")
    num: int = option(64, "DCGAN: number of samples in the grid", min=1)
    columns: int = option(10, "cDCGAN: number of noise vectors (columns); rows are the 10 classes", min=1)
    precision: Literal["bf16", "fp32"] = option("fp32", "precision of the generator")


@dataclass
class InterpolateConfig(RunConfig):
    """``vislab gan interpolate``: strips alpha*z1 + (1-alpha)*z2 from a trained generator."""

    run: str | None = option(None, "training run folder (or its generator.pt)")
    pairs: int = option(8, "number of (z1, z2) pairs, one strip (row) each", min=1)
    steps: int = option(10, "images per strip, alpha going from 1 (z1) to 0 (z2)", min=2)
    label: int = option(-1, "cDCGAN: class of every strip (-1 = strip i shows class i mod 10)", min=-1, max=9)
    precision: Literal["bf16", "fp32"] = option("fp32", "precision of the generator")


# The course's experiments as named variants of the default training run.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "minimax": {"g_loss": "minimax"},
    "nz10": {"nz": 10},
    "nz1000": {"nz": 1000},
    "ngf64": {"ngf": 64, "ndf": 64},
    "ngf16": {"ngf": 16, "ndf": 16},
    "init-default": {"init": "default"},
    "lr-equal": {"lr_g": 2e-4},
    "size64": {"image_size": 64},
}


@dataclass
class CompareConfig(RunConfig):
    """``vislab gan compare``: train named variants (each a run folder OUT/<variant>) and tabulate them."""

    data_root: str | None = option(None, "folder with the MNIST IDX files (default: download into the vislab cache)")
    model: Literal["dcgan", "cdcgan"] = option("dcgan", "model of every variant")
    variants: list[str] = option(["default", "minimax", "nz10", "nz1000"],
                                 f"variants to train (finished ones are reused): {', '.join(VARIANTS)}")
    epochs: int = option(5, "epochs of every variant", min=1)
    eval_samples: int = option(10000, "images for FID / KID", min=2)
    precision: Literal["bf16", "fp32"] = option("bf16", "precision of every variant")
    train_size: int = option(0, "use only the first N training images (0 = all)", min=0)


class _Paused(Exception):
    """Training stopped on purpose (--max-minutes / --stop-after-batches); the checkpoint is kept."""


# ----------------------------------------------------------------------------------------------
# helpers


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> Path:
    """Images in [-1, 1] -> one PNG grid, written atomically."""
    import torchvision

    with atomic_path(path) as tmp:
        torchvision.utils.save_image(_to_unit(images), tmp, nrow=nrow, padding=2, pad_value=1.0, format="png")
    return path


@torch.no_grad()
def generate(g: torch.nn.Module, z: torch.Tensor, y: torch.Tensor | None = None, *, batch_size: int = 1000,
             amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``G(z[, y])`` in eval mode (BatchNorm running statistics), float32, in batches."""
    was_training = g.training
    g.eval()
    out = []
    try:
        for i in range(0, len(z), batch_size):
            with torch.autocast(z.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                zi = z[i:i + batch_size]
                out.append((g(zi) if y is None else g(zi, y[i:i + batch_size])).float())
    finally:
        g.train(was_training)
    return torch.cat(out)


def class_grid_inputs(z: torch.Tensor, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """cDCGAN grid: ``z (C, nz)`` -> inputs for ``num_classes`` rows x ``C`` columns, row k = class k,
    column j = z[j] (make_grid fills rows first, so pass ``nrow=C``)."""
    cols = len(z)
    return z.repeat(num_classes, 1), torch.arange(num_classes).repeat_interleave(cols)


def _grid(g, z_test, conditional, amp_dtype) -> tuple[torch.Tensor, int]:
    if conditional:
        zz, yy = class_grid_inputs(z_test[:10])
        return generate(g, zz, yy, amp_dtype=amp_dtype), 10
    return generate(g, z_test, amp_dtype=amp_dtype), 8


def _curves_figure(history: dict[str, list[float]], title: str):
    from ..reporting.figures import plt

    def smooth(v: list[float], k: int = 25) -> list[float]:
        t = torch.tensor(v, dtype=torch.float64)
        if len(t) < k:
            return t.tolist()
        c = torch.cat([torch.zeros(1, dtype=torch.float64), t.cumsum(0)])
        return ((c[k:] - c[:-k]) / k).tolist()

    steps = list(range(1, len(history["loss_d"]) + 1))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    for key, label in (("loss_d", "D loss"), ("loss_g", "G loss")):
        a1.plot(steps, history[key], alpha=0.25)
        s = smooth(history[key])
        a1.plot(steps[len(steps) - len(s):], s, label=label, color=a1.lines[-1].get_color())
    a1.set_xlabel("batch"), a1.set_ylabel("loss"), a1.legend(), a1.set_title("losses")
    for key, label in (("d_x", "D(x)"), ("d_g_z", "D(G(z))")):
        a2.plot(steps, history[key], alpha=0.25)
        s = smooth(history[key])
        a2.plot(steps[len(steps) - len(s):], s, label=label, color=a2.lines[-1].get_color())
    a2.set_xlabel("batch"), a2.set_ylim(0, 1), a2.legend(), a2.set_title("discriminator outputs")
    fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------------------------
# training


def _load_digits(cfg: GanConfig):
    from ..data.mnist import load_mnist

    train = load_mnist("train", cfg.data_root)
    if cfg.train_size < 0:
        raise UserError(f"--train-size {cfg.train_size}: use 0 (all images) or a positive count")
    if cfg.train_size:
        train = type(train)(train.images[:cfg.train_size], train.labels[:cfg.train_size])
    return train, load_mnist("test", cfg.data_root)


def _check(cfg: GanConfig) -> None:
    for name in ("epochs", "batch_size", "nz", "ngf", "ndf", "eval_samples", "classifier_epochs"):
        if getattr(cfg, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be positive")
    for name in ("lr_d", "lr_g"):
        if getattr(cfg, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be positive")
    if cfg.grid_every < 0 or cfg.max_minutes < 0 or cfg.stop_after_batches < 0:
        raise UserError("--grid-every, --max-minutes and --stop-after-batches must be >= 0")


def train_gan(cfg: GanConfig, run: Run) -> dict[str, Any]:
    """Train per ``cfg`` inside ``run`` (resuming from ``run.path('checkpoint.pt')`` when asked) and
    return the trained ``{"g": G, "d": D, "history": ..., "train_seconds": ..., "data": ...}``."""
    from ..methods.gan import make_optimizers, train_step
    from ..models.dcgan import build_gan
    from ..models.mnist_classifier import prepare_digits

    dev = run.device
    amp = amp_dtype(cfg.precision)
    conditional = cfg.model == "cdcgan"
    train, test = _load_digits(cfg)
    x_all = prepare_digits(train.images, cfg.image_size).to(dev)
    labels = train.labels.to(dev)
    n = len(x_all)
    bs = cfg.batch_size
    nb = math.ceil(n / bs)

    g, d = build_gan(cfg.model, nz=cfg.nz, ngf=cfg.ngf, ndf=cfg.ndf, image_size=cfg.image_size, init=cfg.init)
    # channels_last: oneDNN's fast convolution layout (also on GPUs with tensor cores)
    g = g.to(dev, memory_format=torch.channels_last)
    d = d.to(dev, memory_format=torch.channels_last)
    opt_g, opt_d = make_optimizers(g, d, lr_g=cfg.lr_g, lr_d=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    # One generator for data order and noise: its state in the checkpoint makes --resume exact.
    gen = torch.Generator().manual_seed(cfg.seed)
    z_test = torch.randn(64, cfg.nz, generator=gen).to(dev)
    history: dict[str, list[float]] = {k: [] for k in ("loss_d", "loss_g", "d_x", "d_g_z", "d_g_z_after")}
    epoch, batch, perm, train_seconds = 0, 0, None, 0.0

    ckpt_path = run.path("checkpoint.pt")
    if run.resumed and ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path)
        if ck["config"] != _train_identity(cfg):
            raise UserError(f"--resume: the checkpoint in {run.dir} was made with other training options "
                            f"({ck['config']}); rerun without --resume or with the same options")
        g.load_state_dict(ck["g"]), d.load_state_dict(ck["d"])
        opt_g.load_state_dict(ck["opt_g"]), opt_d.load_state_dict(ck["opt_d"])
        gen.set_state(ck["rng"])
        z_test = ck["z_test"].to(dev)
        history, epoch, batch, perm = ck["history"], ck["epoch"], ck["batch"], ck["perm"]
        train_seconds = ck["train_seconds"]
        print(f"vislab gan: resuming at epoch {epoch + 1}, batch {batch} ({len(history['loss_d'])} done)")

    def checkpoint() -> None:
        torch_save({"config": _train_identity(cfg), "g": g.state_dict(), "d": d.state_dict(),
                    "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "rng": gen.get_state(),
                    "z_test": z_test.cpu(), "history": history, "epoch": epoch, "batch": batch, "perm": perm,
                    "train_seconds": train_seconds}, ckpt_path)

    def grid(name: str) -> None:
        imgs, nrow = _grid(g, z_test, conditional, amp)
        save_grid(imgs, run.path(f"grids/{name}.png"), nrow)

    step = len(history["loss_d"])
    t_start, t_session = time.perf_counter(), 0.0
    if step == 0 and cfg.grid_every:
        grid("step_000000")
    bar = progress(total=cfg.epochs * nb, initial=step, desc=f"{cfg.model} training", unit="batch")
    g.train(), d.train()
    while epoch < cfg.epochs:
        if perm is None:
            perm = torch.randperm(n, generator=gen)
        while batch < nb:
            t0 = time.perf_counter()
            idx = perm[batch * bs:(batch + 1) * bs].to(dev)
            real = x_all[idx].contiguous(memory_format=torch.channels_last)
            z = torch.randn(len(idx), cfg.nz, generator=gen).to(dev)
            stats = train_step(g, d, opt_g, opt_d, real, z, labels[idx] if conditional else None,
                               g_loss=cfg.g_loss, amp_dtype=amp)
            dt = time.perf_counter() - t0
            train_seconds += dt
            t_session += dt
            for k, v in stats.items():
                history[k].append(v)
            batch, step = batch + 1, step + 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss_d=f"{stats['loss_d']:.3f}", loss_g=f"{stats['loss_g']:.3f}",
                                d_x=f"{stats['d_x']:.2f}", d_g_z=f"{stats['d_g_z']:.2f}")
            if cfg.grid_every and step % cfg.grid_every == 0:
                grid(f"step_{step:06d}")
            stop = (cfg.stop_after_batches and step >= cfg.stop_after_batches) or \
                   (cfg.max_minutes and time.perf_counter() - t_start >= 60 * cfg.max_minutes)
            if stop and not (batch == nb and epoch == cfg.epochs - 1):
                if batch == nb:
                    epoch, batch, perm = epoch + 1, 0, None
                checkpoint()
                bar.close()
                raise _Paused(f"training stopped after {step} batches as asked; continue with --resume "
                              f"(the checkpoint is in {run.dir})")
        grid(f"epoch_{epoch + 1:02d}")
        epoch, batch, perm = epoch + 1, 0, None
        if epoch < cfg.epochs:
            checkpoint()
    bar.close()
    return {"g": g, "d": d, "history": history, "train_seconds": train_seconds, "session_seconds": t_session,
            "z_test": z_test, "train": train, "test": test, "x_all": x_all, "steps": step}


def _train_identity(cfg: GanConfig) -> dict[str, Any]:
    """The options that shape the training trajectory (a checkpoint only resumes the same ones)."""
    keep = ("model", "epochs", "batch_size", "nz", "ngf", "ndf", "lr_d", "lr_g", "beta1", "beta2", "g_loss", "init",
            "image_size", "train_size", "seed", "precision")
    return {k: getattr(cfg, k) for k in keep}


def evaluate(cfg: GanConfig, g: torch.nn.Module, train, test, x_all: torch.Tensor, device) -> dict[str, Any]:
    """FID / KID of ``eval_samples`` generated images against the test set, the same for the
    train set (real-vs-real baseline), and the cDCGAN's conditional accuracy."""
    from ..methods.gan_metrics import conditional_accuracy, extract_features, fid_kid_from_features
    from ..models.mnist_classifier import ClassifierFeatures, load_or_train_classifier, prepare_digits

    clf, clf_acc, clf_key = load_or_train_classifier(train.images, train.labels, test.images, test.labels,
                                                     epochs=cfg.classifier_epochs, seed=0)
    feature = ClassifierFeatures(clf)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    n = cfg.eval_samples
    z = torch.randn(n, cfg.nz, generator=gen).to(device)
    y = (torch.arange(n) % 10).to(device) if cfg.model == "cdcgan" else None
    fake = generate(g, z, y, amp_dtype=amp_dtype(cfg.precision)).cpu()
    pick = torch.randperm(len(x_all), generator=gen)[:n]
    # The reference features and the real-vs-real baseline depend only on the data, the classifier
    # and these settings, not on the GAN: cached beside the classifier (a third of the evaluation).
    base_path = cache_dir("gan") / f"baseline-{clf_key}-n{n}-s{cfg.image_size}-seed{cfg.seed}-{len(x_all)}.pt"
    if base_path.is_file():
        cached = torch_load(base_path)
        f_test, base = cached["f_test"], cached["baseline"]
    else:
        real_test = prepare_digits(test.images, 32)[:n]
        real_train = x_all.cpu()[pick]
        # the classifier works at 32x32; 64x64 images are resized by its feature module
        f_test, f_train = extract_features(feature, real_test), extract_features(feature, real_train)
        base = fid_kid_from_features(f_test, f_train, seed=cfg.seed)
        torch_save({"f_test": f_test, "baseline": base, "n_test": len(real_test), "n_train": len(real_train)},
                   base_path)
    m = fid_kid_from_features(f_test, extract_features(feature, fake), seed=cfg.seed)
    out: dict[str, Any] = {
        "fid": m["fid"], "kid": m["kid"], "kid_std": m["kid_std"],
        "fid_real_baseline": base["fid"], "kid_real_baseline": base["kid"],
        "eval_samples": len(fake), "eval_reference": f"MNIST test ({len(f_test)} images)",
        "real_baseline": f"{min(n, len(x_all))} MNIST train images vs the test reference",
        "classifier_test_accuracy": clf_acc,
    }
    if y is not None:
        out["conditional_accuracy"] = conditional_accuracy(clf, fake, y.cpu())
    return out


def run_train(cfg: GanConfig) -> int:
    _check(cfg)
    try:
        with Run("gan", cfg, resume=cfg.resume) as run:
            res = train_gan(cfg, run)
            g, history = res["g"], res["history"]
            t0 = time.perf_counter()
            m = evaluate(cfg, g, res["train"], res["test"], res["x_all"], run.device)
            eval_seconds = time.perf_counter() - t0
            amp = amp_dtype(cfg.precision)
            conditional = cfg.model == "cdcgan"
            imgs, nrow = _grid(g, res["z_test"], conditional, amp)
            save_grid(imgs, run.path("samples.png"), nrow)
            save_grid(_interpolation(g, cfg.nz, conditional, pairs=8, steps=10, label=-1,
                                     gen=torch.Generator().manual_seed(cfg.seed + 2), device=run.device, amp=amp),
                      run.path("interpolation.png"), 10)
            run.save_figure(_curves_figure(history, f"{cfg.model}, {cfg.g_loss} G loss, nz={cfg.nz}"), "curves.png")
            run.save_json("history.json", history)
            torch_save({"model": cfg.model, "nz": cfg.nz, "ngf": cfg.ngf, "ndf": cfg.ndf,
                        "image_size": cfg.image_size, "state_dict": g.state_dict()}, run.path("generator.pt"))
            last = max(1, min(len(history["loss_d"]), math.ceil(len(res["x_all"]) / cfg.batch_size)))
            nonfinite = sum(not math.isfinite(v) for v in history["loss_d"] + history["loss_g"])
            run.metrics.update(m)
            run.metrics.update({
                "batches": res["steps"], "images_seen": res["steps"] * cfg.batch_size,
                "train_seconds": round(res["train_seconds"], 2), "eval_seconds": round(eval_seconds, 2),
                "batches_per_second": round(res["steps"] / max(res["train_seconds"], 1e-9), 2),
                "last_epoch_mean": {k: sum(v[-last:]) / last for k, v in history.items()},
                "nonfinite_losses": nonfinite,
            })
            run.path("checkpoint.pt").unlink(missing_ok=True)  # generator.pt is what sample/interpolate need
            print(_summary(run.metrics))
    except _Paused as e:
        print(f"vislab gan: {e}")
        return 3
    return 0


def _summary(m: dict[str, Any]) -> str:
    parts = [f"FID {m['fid']:.2f} (real-vs-real {m['fid_real_baseline']:.2f})", f"KID {m['kid']:.4f}"]
    if "conditional_accuracy" in m:
        parts.append(f"conditional accuracy {m['conditional_accuracy']:.3f}")
    parts.append(f"{m['batches']} batches in {m['train_seconds']:.1f} s")
    return "vislab gan: " + ", ".join(parts)


# ----------------------------------------------------------------------------------------------
# sample / interpolate


def load_generator(path: str | Path | None, device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The generator saved by a training run (folder or its ``generator.pt``)."""
    from ..models.dcgan import build_gan

    if not path:
        raise UserError("give the training run to use with --run DIR (a folder written by `vislab gan`)")
    p = Path(path)
    if p.is_dir():
        p = p / "generator.pt"
    if not p.is_file():
        hint = " (the run has not finished; finish it with `vislab gan ... --resume`)" \
            if Path(str(path) + PARTIAL_SUFFIX).exists() else ""
        raise UserError(f"--run {path}: no generator.pt there{hint}; pass a folder written by `vislab gan`")
    blob = torch_load(p)
    g, _ = build_gan(blob["model"], nz=blob["nz"], ngf=blob["ngf"], ndf=blob["ndf"], image_size=blob["image_size"])
    g.load_state_dict(blob["state_dict"])
    return g.to(device).eval(), blob


def _interpolation(g, nz: int, conditional: bool, *, pairs: int, steps: int, label: int, gen, device, amp):
    from ..methods.gan import interpolate_latents

    z1, z2 = torch.randn(pairs, nz, generator=gen), torch.randn(pairs, nz, generator=gen)
    z = torch.cat([interpolate_latents(z1[i], z2[i], steps) for i in range(pairs)]).to(device)
    y = None
    if conditional:
        cls = torch.arange(pairs) % 10 if label < 0 else torch.full((pairs,), label)
        y = cls.repeat_interleave(steps).to(device)
    return generate(g, z, y, amp_dtype=amp)


def run_sample(cfg: SampleConfig) -> int:
    if cfg.num <= 0 or cfg.columns <= 0:
        raise UserError("--num and --columns must be positive")
    with Run("gan-sample", cfg) as run:
        g, blob = load_generator(cfg.run, run.device)
        gen = torch.Generator().manual_seed(cfg.seed)
        if blob["model"] == "cdcgan":
            z, y = class_grid_inputs(torch.randn(cfg.columns, blob["nz"], generator=gen))
            imgs, nrow = generate(g, z.to(run.device), y.to(run.device), amp_dtype=amp_dtype(cfg.precision)), cfg.columns
        else:
            z = torch.randn(cfg.num, blob["nz"], generator=gen)
            imgs, nrow = generate(g, z.to(run.device), amp_dtype=amp_dtype(cfg.precision)), max(1, round(math.sqrt(cfg.num)))
        save_grid(imgs, run.path("samples.png"), nrow)
        run.metrics.update({"images": len(imgs), "model": blob["model"],
                            "layout": "rows = classes 0-9, columns = noise vectors" if blob["model"] == "cdcgan"
                            else f"{nrow} per row"})
    return 0


def run_interpolate(cfg: InterpolateConfig) -> int:
    if cfg.pairs <= 0 or cfg.steps < 2:
        raise UserError("--pairs must be positive and --steps at least 2")
    if not -1 <= cfg.label <= 9:
        raise UserError(f"--label {cfg.label}: use a digit 0-9, or -1 for one class per strip")
    with Run("gan-interpolate", cfg) as run:
        g, blob = load_generator(cfg.run, run.device)
        imgs = _interpolation(g, blob["nz"], blob["model"] == "cdcgan", pairs=cfg.pairs, steps=cfg.steps,
                              label=cfg.label, gen=torch.Generator().manual_seed(cfg.seed), device=run.device,
                              amp=amp_dtype(cfg.precision))
        save_grid(imgs, run.path("interpolation.png"), cfg.steps)
        run.metrics.update({"pairs": cfg.pairs, "steps": cfg.steps,
                            "layout": "one strip per row; alpha*z1 + (1-alpha)*z2 with alpha from 1 to 0"})
    return 0


# ----------------------------------------------------------------------------------------------
# compare


def comparison_rows(folders: dict[str, Path]) -> list[dict[str, Any]]:
    """One row per finished run folder: its settings and its numbers."""
    rows = []
    for name, folder in folders.items():
        m = read_run_json(folder / "metrics.json")
        c = read_run_json(folder / "config.json")
        last = m.get("last_epoch_mean", {})
        rows.append({
            "variant": name, "g_loss": c["g_loss"], "nz": c["nz"], "ngf/ndf": f"{c['ngf']}/{c['ndf']}",
            "lr_d/lr_g": f"{c['lr_d']:g}/{c['lr_g']:g}", "init": c["init"], "size": c["image_size"],
            "epochs": c["epochs"], "fid": m["fid"], "fid_real_baseline": m["fid_real_baseline"], "kid": m["kid"],
            "conditional_accuracy": m.get("conditional_accuracy"),
            "loss_d": last.get("loss_d"), "loss_g": last.get("loss_g"), "d_x": last.get("d_x"),
            "d_g_z": last.get("d_g_z"), "train_seconds": m.get("train_seconds"),
        })
    return rows


def comparison_markdown(rows: list[dict[str, Any]]) -> str:
    cols = ["variant", "g_loss", "nz", "ngf/ndf", "lr_d/lr_g", "init", "size", "epochs", "fid", "fid_real_baseline",
            "kid", "conditional_accuracy", "loss_d", "loss_g", "d_x", "d_g_z", "train_seconds"]
    cols = [c for c in cols if any(r.get(c) is not None for r in rows)]

    def fmt(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 1 else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def run_compare(cfg: CompareConfig) -> int:
    unknown = [v for v in cfg.variants if v not in VARIANTS]
    if unknown:
        raise UserError(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    out = Path(cfg.out or "runs/gan-compare")
    out.mkdir(parents=True, exist_ok=True)
    folders = {}
    for name in cfg.variants:
        folder = out / name
        if not (folder / "metrics.json").is_file() or cfg.overwrite:
            overrides = dict(VARIANTS[name], model=cfg.model, data_root=cfg.data_root, epochs=cfg.epochs,
                             eval_samples=cfg.eval_samples, precision=cfg.precision, train_size=cfg.train_size,
                             seed=cfg.seed, device=cfg.device, out=str(folder), overwrite=cfg.overwrite,
                             resume=Path(str(folder) + PARTIAL_SUFFIX).exists())
            print(f"vislab gan compare: training variant {name} -> {folder}")
            status = run_train(build_config(GanConfig, overrides))
            if status != 0:
                return status
        else:
            print(f"vislab gan compare: reusing the finished run {folder}")
        folders[name] = folder
    rows = comparison_rows(folders)
    table = comparison_markdown(rows)
    write_text(out / "comparison.md", table)
    write_json(out / "comparison.json", rows)
    print(table)
    return 0


# ----------------------------------------------------------------------------------------------
# CLI


def _strict(cfg_cls: type, fn):
    """Handler of an action: refuses training options written before the action's name
    (``vislab gan --epochs 3 sample``), which argparse would otherwise silently accept and ignore."""
    own = {f.name for f in dataclasses.fields(cfg_cls)}
    train_only = {f.name for f in dataclasses.fields(GanConfig)} - own

    def handler(args) -> int:
        stray = sorted(k for k in vars(args) if k in train_only)
        if stray:
            raise UserError(f"option(s) {', '.join('--' + s.replace('_', '-') for s in stray)} do not apply to "
                            f"`vislab gan {args.gan_action}`; see `vislab gan {args.gan_action} --help`")
        return fn(config_from_args(cfg_cls, args))

    return handler


def register(subparsers) -> None:
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
        sub = add_command(actions, name, cls, fn, help=text)
        sub.set_defaults(handler=_strict(cls, fn))
