"""``vislab adapt``: unsupervised domain adaptation MNIST -> MNIST-M (SPEC Part C).

Wires the data (MNIST via :func:`load_mnist`, MNIST-M via :func:`load_mnistm`, both in memory as
uint8 tensors; batches are sliced and normalised on the fly), the DANN network, one algorithm per
mode (``vislab.methods.dann``) and the outputs: per-epoch source/target test accuracy, domain
classifier accuracy, lambda and lr curves, pseudo-label rounds, t-SNE of features, a comparison
table when several modes run, and an atomic per-epoch checkpoint for ``--resume``.

Target labels: read only by :func:`evaluate` (and the pseudo-label *report*), except in mode
``target-oracle``, the labelled upper bound.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..config import RunConfig, add_command, option
from ..data.mnist import MNIST_MEAN, MNIST_STD, DigitSet, load_mnist
from ..data.mnistm import load_mnistm
from ..errors import UserError
from ..io import torch_load, torch_save, write_text
from ..methods.augment import augment_digits
from ..methods.dann import ALGORITHMS, AdaptHParams, Algorithm, resolve_hparams, select_pseudo_labels
from ..methods.grl import dann_lr, grl_lambda
from ..models.dann import DANNNet
from ..progress import progress
from ..runs import Run

MODES = ("source-only", "dann", "dann+pl", "target-oracle")
Mode = Literal["source-only", "dann", "dann+pl", "target-oracle", "all"]


@dataclasses.dataclass
class AdaptConfig(RunConfig, AdaptHParams):
    mode: list[Mode] = option(["dann"], "what to train: source-only (lower bound), dann, dann+pl (DANN + "
                              "pseudo-labels), target-oracle (trained on target labels: upper bound), or "
                              "all; several modes give a comparison table")
    preset: Literal["vislab", "course"] = option("vislab", "defaults for the unset options: vislab, or the "
                                                 "course's exact settings (lambda gamma 2)")
    data_root: str | None = option(None, "folder with the MNIST IDX files (gzip or raw); default: download "
                                   "with torchvision into vislab's cache")
    backgrounds: str | None = option(None, "folder of background photos for MNIST-M (e.g. BSDS500 "
                                     "images/train); default: download BSDS500, else bundled photos")
    mnistm_seed: int = option(0, "seed of the MNIST-M build (fixed, so runs with other --seed share it)")
    epochs: int | None = option(None, "training epochs (default: 20 for dann and dann+pl; 10 for source-only "
                                "as in the SPEC and for target-oracle)")
    batch_size: int = option(64, "images per domain per step (source + target) for dann, dann+pl, target-oracle")
    source_only_batch: int = option(128, "batch size of source-only training")
    mean: float = option(MNIST_MEAN, "normalisation mean (per channel, both domains)")
    std: float = option(MNIST_STD, "normalisation std (per channel, both domains)")
    target_norm: Literal["spec", "own"] = option("spec", "target normalisation: spec = --mean/--std like the "
                                                 "source; own = the target train images' own per-channel mean "
                                                 "and std (unlabelled statistics, an input-level alignment)")
    pl_select: Literal["top", "threshold"] = option("top", "pseudo-label selection: per-class top fraction or "
                                                    "confidence threshold")
    pl_threshold: float = option(0.95, "confidence threshold for --pl-select threshold")
    pl_fraction_start: float = option(0.4, "per-class fraction labelled in the first round (--pl-select top)")
    pl_fraction_end: float = option(0.8, "per-class fraction labelled in the last round (--pl-select top)")
    pl_start_epoch: int = option(8, "epoch (0-based) of the first pseudo-label round; DANN alone before it")
    pl_rounds: int = option(4, "number of pseudo-label rounds, evenly spaced from --pl-start-epoch")
    pl_augment: bool = option(True, "take the pseudo-label loss on randomly transformed copies of the target "
                              "images (small affine warp, colour-channel permutation, inversion); "
                              "--no-pl-augment: on the images as labelled")
    eval_batch: int = option(2000, "batch size for evaluation")
    tsne: bool = option(True, "t-SNE of 1,000 source + 1,000 target test features before and after training")
    tsne_points: int = option(1000, "test images per domain in the t-SNE")
    tsne_iter: int = option(500, "t-SNE optimisation iterations (>= 250; 1000 is sklearn's default, "
                            "twice as slow)")
    threads: int | None = option(None, "torch CPU threads (default: torch's choice)")
    resume: bool = option(False, "continue the incomplete run in --out from its last epoch checkpoint")


# -- data ----------------------------------------------------------------------------------
@dataclasses.dataclass
class Domains:
    source_train: DigitSet
    source_test: DigitSet
    target_train: DigitSet
    target_test: DigitSet
    backgrounds: str = ""
    mnistm_sha256: dict = dataclasses.field(default_factory=dict)
    target_stats: tuple | None = None  # per-channel (mean, std) of target train, computed on demand

    def to(self, device: torch.device) -> "Domains":
        """The four sets with images and labels on ``device`` (the training loop slices them there)."""
        sets = {}
        for name in ("source_train", "source_test", "target_train", "target_test"):
            ds = getattr(self, name)
            sets[name] = dataclasses.replace(ds, images=ds.images.to(device), labels=ds.labels.to(device))
        return dataclasses.replace(self, **sets, target_stats=None)


def channel_stats(images: torch.Tensor, chunk: int = 10000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (in [0, 1] units) of uint8 images (N, C, H, W), in chunks."""
    s = torch.zeros(images.shape[1], dtype=torch.float64, device=images.device)
    s2 = torch.zeros_like(s)
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].to(torch.float64) / 255.0
        s += x.sum(dim=(0, 2, 3))
        s2 += (x * x).sum(dim=(0, 2, 3))
    n = len(images) * images.shape[2] * images.shape[3]
    mean = s / n
    return mean.float(), (s2 / n - mean * mean).clamp_min(1e-12).sqrt().float()


def input_norm(cfg: AdaptConfig, domains: Domains, domain: str):
    """(mean, std) that normalise ``domain`` ('source' or 'target') images."""
    if domain == "target" and cfg.target_norm == "own":
        if domains.target_stats is None:
            domains.target_stats = channel_stats(domains.target_train.images)
        return domains.target_stats
    return cfg.mean, cfg.std


def load_domains(cfg: AdaptConfig) -> Domains:
    src_train, src_test = load_mnist("train", cfg.data_root), load_mnist("test", cfg.data_root)
    tgt = {s: load_mnistm(s, cfg.data_root, cfg.backgrounds, seed=cfg.mnistm_seed, digits=d)
           for s, d in (("train", src_train), ("test", src_test))}
    return Domains(src_train, src_test, tgt["train"], tgt["test"], tgt["train"].backgrounds,
                   {s: m.content_sha256 for s, m in tgt.items()})


def normalize(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """Float pixels (N, C, H, W) in [0, 1] -> normalised; ``mean``/``std`` floats or per-channel (C,)."""
    if isinstance(mean, torch.Tensor):
        return (pixels - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return (pixels - mean) / std


def to_input(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, H, W) / (N, 1|3, H, W) -> normalised float (N, 3, H, W); grey repeated to 3 channels.
    ``mean``/``std``: floats, or per-channel tensors (C,) in [0, 1] units."""
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if isinstance(mean, torch.Tensor):
        return normalize(images.float() / 255.0, mean, std).expand(-1, 3, -1, -1)
    x = images.float().mul_(1.0 / (255.0 * std)).sub_(mean / std)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


# -- evaluation (the only place that reads target labels outside target-oracle) -------------------
@torch.no_grad()
def evaluate(algo: Algorithm, domains: Domains, cfg: AdaptConfig) -> dict[str, float]:
    """Test accuracy on both domains and the domain classifier's test accuracy."""
    net = algo.eval_net.eval()
    out: dict[str, float] = {}
    dom_correct = dom_total = 0
    for name, ds, is_source in (("source", domains.source_test, True), ("target", domains.target_test, False)):
        correct = 0
        for i in range(0, len(ds), cfg.eval_batch):
            x = to_input(ds.images[i:i + cfg.eval_batch], *input_norm(cfg, domains, name))
            with algo._autocast(x):
                f = net.features(algo._layout(x))
                logits = net.classifier(f).float()
                dlog = net.domain(f).float()
            correct += (logits.argmax(1) == ds.labels[i:i + cfg.eval_batch]).sum().item()
            dom_correct += ((dlog > 0) == is_source).sum().item()
            dom_total += len(x)
        out[f"{name}_accuracy"] = correct / len(ds)
    out["domain_accuracy"] = dom_correct / dom_total
    return out


@torch.no_grad()
def predict_probs(algo: Algorithm, images: torch.Tensor, cfg: AdaptConfig, norm: tuple) -> torch.Tensor:
    algo.eval_net.eval()
    chunks = [algo.predict(to_input(images[i:i + cfg.eval_batch], *norm)).softmax(1)
              for i in range(0, len(images), cfg.eval_batch)]
    return torch.cat(chunks)


def tsne_features(algo: Algorithm, domains: Domains, cfg: AdaptConfig, seed: int) -> np.ndarray:
    """2-D t-SNE (scikit-learn) of G_f features: rows 0..n-1 source test, n..2n-1 target test."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = cfg.tsne_points
    g = torch.Generator().manual_seed(1234)  # the same images in every run and mode
    si = torch.randperm(len(domains.source_test), generator=g)[:n]
    ti = torch.randperm(len(domains.target_test), generator=g)[:n]
    algo.eval_net.eval()
    images = [(domains.source_test.images, si, "source"), (domains.target_test.images, ti, "target")]
    feats = torch.cat([algo.features(to_input(ims[idx.to(ims.device)], *input_norm(cfg, domains, name)))
                       for ims, idx, name in images]).cpu().numpy()
    # PCA to 50 dims first: the usual t-SNE preprocessing, and 2352-dim distances would be slow
    reduced = PCA(n_components=min(50, *feats.shape), random_state=seed).fit_transform(feats)
    return TSNE(n_components=2, init="pca", random_state=seed, perplexity=30, max_iter=cfg.tsne_iter,
                n_jobs=1).fit_transform(reduced)


# -- training ----------------------------------------------------------------------------------
def mode_schedule(mode: str, cfg: AdaptConfig, domains: Domains) -> tuple[int, int]:
    """(epochs, steps per epoch) of ``mode``."""
    epochs = cfg.epochs if cfg.epochs is not None else (20 if mode in ("dann", "dann+pl") else 10)
    if mode == "source-only":
        steps = len(domains.source_train) // cfg.source_only_batch
    else:
        steps = min(len(domains.source_train), len(domains.target_train)) // cfg.batch_size
    if epochs < 1 or steps < 1:
        raise UserError(f"mode {mode}: {epochs} epochs of {steps} steps; need --epochs >= 1 and a batch size "
                        f"no larger than the datasets ({len(domains.source_train)} source images)")
    return epochs, steps


def pl_round_epochs(cfg: AdaptConfig, epochs: int) -> list[int]:
    """Epochs at whose start a pseudo-label round happens (evenly spaced from pl_start_epoch)."""
    if cfg.pl_rounds < 1 or cfg.pl_start_epoch >= epochs:
        raise UserError(f"dann+pl: --pl-start-epoch {cfg.pl_start_epoch} must be below --epochs {epochs} and "
                        f"--pl-rounds ({cfg.pl_rounds}) at least 1")
    span = epochs - cfg.pl_start_epoch
    return sorted({cfg.pl_start_epoch + (r * span) // cfg.pl_rounds for r in range(cfg.pl_rounds)})


def train_mode(mode: str, cfg: AdaptConfig, hp: AdaptHParams, domains: Domains, folder: Path,
               resume: bool) -> dict:
    """Train one mode, writing its checkpoint and figures into ``folder``; return its metrics."""
    epochs, steps = mode_schedule(mode, cfg, domains)
    torch.manual_seed(cfg.seed)
    device = domains.source_train.images.device
    algo = ALGORITHMS[mode](DANNNet().to(device), hp, total_steps=epochs * steps)
    order = torch.Generator().manual_seed(cfg.seed)  # data order, saved in checkpoints for --resume
    augment_rng = torch.Generator().manual_seed(cfg.seed + 1)  # pseudo-label augmentations, saved too
    history: list[dict] = []
    pl_rounds: list[dict] = []
    pseudo = torch.full((len(domains.target_train),), -1, dtype=torch.int64, device=device)
    start = 0
    ckpt_path = folder / "checkpoint.pt"
    tsne_init = None
    if resume and ckpt_path.is_file():
        ckpt = torch_load(ckpt_path)
        algo.load_state(ckpt["algorithm"])
        order.set_state(ckpt["order_rng"])
        if "augment_rng" in ckpt:  # absent from checkpoints of vislab before pseudo-label augmentation
            augment_rng.set_state(ckpt["augment_rng"])
        history, pl_rounds, start = ckpt["history"], ckpt["pl_rounds"], ckpt["epoch"]
        pseudo = ckpt["pseudo"].to(device)
        tsne_init = ckpt.get("tsne_init")
        print(f"vislab adapt: {mode}: resuming after epoch {start}/{epochs}", file=sys.stderr)
    elif cfg.tsne:
        tsne_init = torch.from_numpy(tsne_features(algo, domains, cfg, cfg.seed))
    if tsne_init is None and cfg.tsne:  # resumed a run whose checkpoint lacks it (cannot recompute)
        tsne_init = torch.zeros(2 * cfg.tsne_points, 2)

    rounds_at = pl_round_epochs(cfg, epochs) if mode == "dann+pl" else []
    src, tgt = domains.source_train, domains.target_train
    snorm, tnorm = input_norm(cfg, domains, "source"), input_norm(cfg, domains, "target")
    bs = cfg.source_only_batch if mode == "source-only" else cfg.batch_size
    t_mode = time.perf_counter()
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        if epoch in rounds_at:
            r = rounds_at.index(epoch)
            frac = cfg.pl_fraction_start + (cfg.pl_fraction_end - cfg.pl_fraction_start) * (
                r / (len(rounds_at) - 1) if len(rounds_at) > 1 else 1.0)
            probs = predict_probs(algo, tgt.images, cfg, input_norm(cfg, domains, "target"))
            pseudo = select_pseudo_labels(probs, cfg.pl_select, frac, cfg.pl_threshold)
            labelled = pseudo >= 0
            # evaluation only: how many pseudo-labels are right (tgt.labels never reach training)
            acc = (pseudo[labelled] == tgt.labels[labelled]).float().mean().item() if labelled.any() else float("nan")
            pl_rounds.append({"round": r, "epoch": epoch, "fraction": frac if cfg.pl_select == "top" else None,
                              "count": int(labelled.sum()), "accuracy": acc})
        t_train = time.perf_counter()
        # drawn on the CPU (one generator, saved for --resume, whatever the device), used on the device
        ps = torch.randperm(len(src), generator=order).to(device)
        pt = torch.randperm(len(tgt), generator=order).to(device)
        sums: dict[str, float] = {}
        for i in progress(range(steps), desc=f"{mode} epoch {epoch + 1}/{epochs}", total=steps):
            si = ps[i * bs:(i + 1) * bs]
            batch = {"xs": to_input(src.images[si], *snorm), "ys": src.labels[si]}
            if mode != "source-only":
                ti = pt[i * bs:(i + 1) * bs]
                batch["xt"] = to_input(tgt.images[ti], *tnorm)
                if mode == "dann+pl":
                    batch["pt"] = pseudo[ti]
                    if cfg.pl_augment:
                        pixels = augment_digits(tgt.images[ti].float() / 255.0, augment_rng)
                        batch["xt_aug"] = normalize(pixels, *tnorm)
                if algo.uses_target_labels:
                    batch["yt"] = tgt.labels[ti]
            stats = algo.update(batch)
            train_seconds = time.perf_counter() - t_train
            if not math.isfinite(stats["loss_class"]):
                raise UserError(f"{mode}: training diverged (loss {stats['loss_class']}) at epoch {epoch + 1}, "
                                f"step {i}; lower --lr or use a slower lambda schedule (--lambda-schedule course)")
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
        row = {"epoch": epoch + 1, **evaluate(algo, domains, cfg)}
        row.update({f"train_{k}": v / steps for k, v in sums.items() if k not in ("lr", "lambda")})
        row.update({"lr": algo.lr(), "lambda": algo.grl_lambda() if mode != "source-only" else 0.0,
                    "train_steps_per_second": round(steps / train_seconds, 2),
                    "seconds": round(time.perf_counter() - t0, 2)})
        history.append(row)
        print(f"vislab adapt: {mode} epoch {epoch + 1}/{epochs}: source {row['source_accuracy']:.4f} "
              f"target {row['target_accuracy']:.4f} domain {row['domain_accuracy']:.3f} ({row['seconds']}s)",
              file=sys.stderr)
        torch_save({"algorithm": algo.state(), "order_rng": order.get_state(),
                    "augment_rng": augment_rng.get_state(), "history": history,
                    "pl_rounds": pl_rounds, "pseudo": pseudo, "epoch": epoch + 1, "tsne_init": tsne_init}, ckpt_path)

    final = history[-1]
    metrics = {
        "mode": mode, "upper_bound_uses_target_labels": algo.uses_target_labels,
        "target_accuracy": final["target_accuracy"], "source_accuracy": final["source_accuracy"],
        "domain_accuracy": final["domain_accuracy"], "epochs": epochs, "steps_per_epoch": steps,
        "batch_size": bs, "min_source_accuracy": min(h["source_accuracy"] for h in history),
        "train_seconds_this_session": round(time.perf_counter() - t_mode, 1),
        "steps_per_second": float(np.median([h["train_steps_per_second"] for h in history])),
        "history": history,
    }
    if mode == "dann+pl":
        metrics["pseudo_label_rounds"] = pl_rounds
    plot_curves(mode, history, hp, epochs, steps, folder, pl_rounds)
    if cfg.tsne:
        after = tsne_features(algo, domains, cfg, cfg.seed)
        metrics["_tsne"] = (tsne_init.numpy(), after)
        plot_tsne([("before training (init)", tsne_init.numpy()), (f"after {mode}", after)],
                  cfg.tsne_points, folder / "tsne.png", f"G_f features, {mode}")
    return metrics


# -- figures -------------------------------------------------------------------------------
def plot_curves(mode: str, history: list[dict], hp: AdaptHParams, epochs: int, steps: int, folder: Path,
                pl_rounds: list[dict]) -> None:
    from ..io import save_figure
    from ..reporting.figures import plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].plot(ep, [h["source_accuracy"] for h in history], "o-", label="source test (MNIST)")
    ax[0].plot(ep, [h["target_accuracy"] for h in history], "o-", label="target test (MNIST-M)")
    for r in pl_rounds:
        ax[0].axvline(r["epoch"] + 0.5, color="grey", lw=0.6, ls=":")
    ax[0].set(xlabel="epoch", ylabel="accuracy", title=f"{mode}: test accuracy")
    ax[0].legend()
    ax[1].plot(ep, [h["domain_accuracy"] for h in history], "o-", label="test")
    if "train_domain_acc" in history[0]:
        ax[1].plot(ep, [h["train_domain_acc"] for h in history], "s--", label="train batches")
    ax[1].axhline(0.5, color="grey", lw=0.6)
    ax[1].set(xlabel="epoch", ylabel="accuracy", title="domain classifier accuracy", ylim=(0, 1.02))
    ax[1].legend()
    # the schedules are functions of progress p: draw them continuously over the epochs
    p = np.linspace(0, 1, 200)
    lr = [dann_lr(v, hp.lr, hp.lr_alpha, hp.lr_beta) for v in p]
    lines = ax[2].plot(p * epochs, lr, color="C0", label="lr")
    ax[2].set(xlabel="epoch", ylabel="learning rate", title="schedules")
    if mode != "source-only":
        tw = ax[2].twinx()
        lam = [grl_lambda(v, hp.lambda_schedule or "paper", hp.gamma, hp.lambda_max, hp.lambda_max) for v in p]
        lines += tw.plot(p * epochs, lam, color="C1", label="GRL lambda")
        tw.set_ylabel("GRL lambda", color="C1")
    ax[2].legend(lines, [ln.get_label() for ln in lines], loc="center right")
    save_figure(fig, folder / "curves.png")


def plot_tsne(panels: list[tuple[str, np.ndarray]], n: int, path: Path, title: str) -> None:
    from ..io import save_figure
    from ..reporting.figures import plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
    for ax, (name, emb) in zip(axes[0], panels):
        ax.scatter(emb[:n, 0], emb[:n, 1], s=3, c="C0", label="source (MNIST)")
        ax.scatter(emb[n:, 0], emb[n:, 1], s=3, c="C3", label="target (MNIST-M)")
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(markerscale=4)
    fig.suptitle(title)
    save_figure(fig, path)


def comparison_table(results: dict[str, dict]) -> str:
    lines = ["| mode | epochs | source acc | target acc (MNIST-M) | domain acc | steps/s |",
             "|---|---|---|---|---|---|"]
    for mode, m in results.items():
        name = mode + (" (upper bound: uses target labels)" if m["upper_bound_uses_target_labels"] else "")
        lines.append(f"| {name} | {m['epochs']} | {m['source_accuracy']:.4f} | {m['target_accuracy']:.4f} | "
                     f"{m['domain_accuracy']:.3f} | {m['steps_per_second']} |")
    return "\n".join(lines) + "\n"


# -- command -------------------------------------------------------------------------------
def run_adapt(cfg: AdaptConfig) -> int:
    modes = list(MODES) if "all" in cfg.mode else list(dict.fromkeys(cfg.mode))
    hp = resolve_hparams(cfg, cfg.preset)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with Run("adapt", cfg, resume=cfg.resume) as run:
        # the whole data set lives on the device (MNIST + MNIST-M: 0.2 GB of uint8)
        domains = load_domains(cfg).to(run.device)
        results: dict[str, dict] = {}
        for mode in modes:
            folder = run.dir if len(modes) == 1 else run.path(mode + "/x").parent
            results[mode] = train_mode(mode, cfg, hp, domains, folder, run.resumed)
        tsnes = {m: r.pop("_tsne") for m, r in results.items() if "_tsne" in r}
        common = {"hparams": dataclasses.asdict(hp), "backgrounds": domains.backgrounds,
                  "mnistm_sha256": domains.mnistm_sha256}
        if len(modes) == 1:
            run.metrics.update(results[modes[0]])
        else:
            table = comparison_table(results)
            write_text(run.path("comparison.md"), table)
            print(table, file=sys.stderr)
            run.metrics.update({"modes": results, "comparison_markdown": table})
            last = results[modes[-1]]
            run.metrics.update(target_accuracy=last["target_accuracy"], source_accuracy=last["source_accuracy"])
            if len(tsnes) > 1:
                first = next(iter(tsnes.values()))
                panels = [("init (before any training)", first[0])] + [(m, t[1]) for m, t in tsnes.items()]
                plot_tsne(panels, cfg.tsne_points, run.path("tsne_modes.png"), "G_f features per mode")
        run.metrics.update(common)
        for mode in modes:  # finished: the checkpoints are no longer needed
            folder = run.dir if len(modes) == 1 else run.dir / mode
            (folder / "checkpoint.pt").unlink(missing_ok=True)
    return 0


@dataclasses.dataclass
class AdaptSummaryConfig(RunConfig):
    runs: list[str] = option([], "finished `vislab adapt` run folders (any modes and seeds) to tabulate")


def summarise_runs(paths: list[str]) -> tuple[dict, str]:
    """Mean +- std (over seeds) of final accuracies per mode, from run folders' metrics.json."""
    per_mode: dict[str, list[dict]] = {}
    for p in paths:
        f = Path(p) / "metrics.json"
        if not f.is_file():
            raise UserError(f"{p}: no metrics.json; give finished `vislab adapt` run folders")
        m = json.loads(f.read_text())
        seed = json.loads((Path(p) / "config.json").read_text()).get("seed") if (Path(p) / "config.json").is_file() else None
        for mode, r in (m["modes"].items() if "modes" in m else [(m["mode"], m)]):
            per_mode.setdefault(mode, []).append({**r, "seed": seed, "run": str(p)})
    summary: dict[str, dict] = {}
    lines = ["| mode | runs (seeds) | target acc (MNIST-M) mean +- std | source acc mean +- std | "
             "min source acc over epochs |", "|---|---|---|---|---|"]
    for mode in [m for m in MODES if m in per_mode]:
        rs = per_mode[mode]
        t = np.array([r["target_accuracy"] for r in rs])
        s_ = np.array([r["source_accuracy"] for r in rs])
        summary[mode] = {"n": len(rs), "seeds": [r["seed"] for r in rs], "target_mean": t.mean(),
                         "target_std": t.std(ddof=1) if len(t) > 1 else None, "source_mean": s_.mean(),
                         "source_std": s_.std(ddof=1) if len(s_) > 1 else None,
                         "min_source_accuracy": min(r["min_source_accuracy"] for r in rs),
                         "target_accuracies": t.tolist(), "runs": [r["run"] for r in rs]}
        v = summary[mode]

        def pm(mean, std):
            return f"{mean:.4f}" + (f" +- {std:.4f}" if std is not None else " (1 run)")
        lines.append(f"| {mode} | {v['n']} ({', '.join(str(x) for x in v['seeds'])}) | "
                     f"{pm(v['target_mean'], v['target_std'])} | {pm(v['source_mean'], v['source_std'])} | "
                     f"{v['min_source_accuracy']:.4f} |")
    return summary, "\n".join(lines) + "\n"


def run_summary(cfg: AdaptSummaryConfig) -> int:
    if not cfg.runs:
        raise UserError("adapt-summary: give run folders with --runs DIR [DIR ...]")
    summary, table = summarise_runs(cfg.runs)
    with Run("adapt-summary", cfg) as run:
        write_text(run.path("comparison.md"), table)
        run.metrics.update({"modes": summary, "comparison_markdown": table})
    print(table)
    return 0


def register(subparsers) -> None:
    add_command(subparsers, "adapt-summary", AdaptSummaryConfig, run_summary,
                help="table of `vislab adapt` runs: mean +- std over seeds per mode")
    add_command(subparsers, "adapt", AdaptConfig, run_adapt,
                help="domain adaptation MNIST -> MNIST-M: source-only, DANN, DANN + pseudo-labels, target oracle",
                description="Unsupervised domain adaptation from MNIST to MNIST-M (Ganin & Lempitsky 2015): "
                "trains the SPEC's networks and writes metrics.json (target_accuracy, source_accuracy, "
                "per-epoch curves), curves.png, tsne.png and, for several modes, comparison.md.")
