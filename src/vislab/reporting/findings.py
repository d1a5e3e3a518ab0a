"""Sentences that answer each experiment's questions (SPEC) from the numbers a run measured.

One function per experiment name, registered in ``FINDINGS``; each reads the run's metrics,
checked against the experiment's schema (:mod:`vislab.schemas`), and the resolved config, and
returns plain sentences. No number here is typed in: all come from the run.
"""
from __future__ import annotations

from typing import Any, Callable

from ..schemas import (AdaptMetrics, AdaptModeResult, ClassVizMetrics, FoolMetrics, GanMetrics, InspectMetrics,
                       SaliencyMetrics, TransferMetrics, check_metrics)

Findings = Callable[[Any, dict[str, Any]], list[str]]
FINDINGS: dict[str, Findings] = {}


def finding(experiment: str) -> Callable[[Findings], Findings]:
    def add(fn: Findings) -> Findings:
        FINDINGS[experiment] = fn
        return fn

    return add


def findings_for(experiment: str, metrics: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The findings of a run of ``experiment``, from its metrics checked against the experiment's
    schema: a :class:`vislab.schemas.MetricsSchemaError` (a ValueError) names the first missing,
    unknown or ill-typed key (a run written by another version of vislab)."""
    fn = FINDINGS.get(experiment)
    return fn(check_metrics(experiment, metrics), config) if fn else []


@finding("inspect")
def _inspect(m: InspectMetrics, cfg: dict[str, Any]) -> list[str]:
    total = m["params_total"]
    out = [f"{m['model']} has {total:,} parameters."]
    if total:
        shares = ", ".join(f"{k} {v:,} ({100 * v / total:.1f}%)" for k, v in m["params_by_type"].items())
        out.append(f"Where they are: {shares}.")
        if m["params_linear"]:
            out.append(f"The fully connected (Linear) layers hold {100 * m['params_linear'] / total:.1f}% "
                       "of all parameters.")
    if m["output_size"]:
        out.append(f"The last layer has {m['output_size']} outputs: one score per ImageNet class; "
                   "a softmax turns them into class probabilities.")
    for p in m.get("predictions", [])[:10]:
        top = p["top"][0]
        out.append(f"{p['image']}: {top['class']} (p = {top['prob']:.3f}).")
    if m.get("images_failed"):
        out.append(f"{m['images_failed']} image(s) could not be read (see errors in metrics.json).")
    return out


@finding("saliency")
def _saliency(m: SaliencyMetrics, cfg: dict[str, Any]) -> list[str]:
    out = [f"Saliency maps of {m['num_images']} images on {m['model']} in {m['seconds']} s "
           "(one backward pass per batch): |d logit / d input|, max over colour channels."]
    if m["top1_accuracy"] is not None:
        out.append(f"The network's top-1 agrees with the labels on {100 * m['top1_accuracy']:.0f}% of them; "
                   "a map explains the chosen class's score, right or wrong, not where the object is for sure.")
    out.append("Bright pixels are those whose small change moves the score most. Where they gather on the object "
               "the maps can seed weakly supervised localisation or segmentation; they are noisy and only a "
               "first-order, per-pixel view of the decision.")
    return out


@finding("fool")
def _fool(m: FoolMetrics, cfg: dict[str, Any]) -> list[str]:
    attack = m.get("attack", "naive")
    how = (f"within {m['max_iterations']} steps" if attack == "naive" else
           f"by {attack.upper()} within an L-infinity budget of {m['eps_255']:g}/255")
    return [
        f"{100 * m['success_rate']:.0f}% of {m['num_images']} images were pushed to "
        f"'{m['target_name']}' ({m['target']}) {how} "
        f"(median {m['median_iterations']} steps, at most {m['max_iterations_taken']}); "
        f"{100 * m['success_after_uint8_rate']:.0f}% still fool once saved as 8-bit PNG.",
        f"Median perturbation: L-infinity {m['median_linf_255']:.1f}/255, L2 {m['median_l2_255']:.0f}/255 "
        f"-- barely visible (see the x10 difference images), with median target probability "
        f"{m['median_target_probability']:.2f}.",
        "In practice: a classifier's decision can be changed by an imperceptible change, so its outputs "
        "cannot be trusted against an adversary. " + (
            "This naive method needs the gradient (white box) and stops just across the boundary; stronger "
            "attacks (PGD, C&W) and defences (adversarial training) go further." if attack == "naive" else
            f"{attack.upper()} needs the gradient (white box) and uses its whole budget; defences such as "
            "adversarial training aim to make such a budget insufficient."),
    ]


@finding("classviz")
def _classviz(m: ClassVizMetrics, cfg: dict[str, Any]) -> list[str]:
    out = []
    for r in m["results"]:
        out.append(f"Class {r['target']} ({r['target_name']}): after {m['iterations']} steps from "
                   f"{m['init']} the network gives it probability {r['probability']:.3f}.")
    out.append(f"{m['iterations']} steps took {m['seconds']} s. The image shows textures and parts the "
               "network associates with the class (legs, hair, eyes), repeated over the image, not a natural "
               "photo: the score is maximised, not realism; L2, blur and jitter regularise towards natural images.")
    if "sweep" in m:
        for e in m["sweep"]["results"]:
            probs = ", ".join(f"{p:.2f} at {s}" for s, p in e["probability_by_iterations"].items())
            out.append(f"Sweep, learning_rate {e['learning_rate']:g}, l2_reg {e['l2_reg']:g}: "
                       f"target probability {probs} iterations.")
    return out


@finding("transfer")
def _transfer(m: TransferMetrics, cfg: dict[str, Any]) -> list[str]:
    out = [f"{m['n_train']} training and {m['n_test']} test images; test accuracy "
           f"{m['test_accuracy']:.4f} with LinearSVC(C={m['C']}) on "
           f"{'L2-normalised ' if m['l2'] else ''}features of a frozen ImageNet network."]
    for v in m["variants"]:
        c = f", C={v['C']}" if "C" in v else ""
        out.append(f"Variant {v['model']} / {v['layer']} ({v['resize']}, {v['dim']}-d, "
                   f"{v['head']}{c}): test accuracy {v['test_accuracy']:.4f}.")
    per_class = m.get("per_class_accuracy", {})
    if per_class:
        worst = sorted(per_class.items(), key=lambda kv: kv[1])[:3]
        out.append("Hardest classes: " + ", ".join(f"{k} {v:.2f}" for k, v in worst) + ".")
    out.append("Why not train from scratch: 1,500 labelled images cannot fit millions of parameters (VGG16 has "
               "138M) without overfitting; ImageNet pre-training supplies generic features, and only a linear "
               "classifier is learned here. Grayscale images are repeated to three channels.")
    if m["cache_hit"]:
        out.append("All features came from the cache: no image went through the network in this run.")
    return out


@finding("adapt")
def _adapt(m: AdaptMetrics, cfg: dict[str, Any]) -> list[str]:
    modes: dict[str, AdaptModeResult] = m["modes"] if "modes" in m else {m["mode"]: m}
    out = []
    for name, r in modes.items():
        out.append(f"{name}: target (MNIST-M) accuracy {r['target_accuracy']:.4f}, source (MNIST) "
                   f"{r['source_accuracy']:.4f} (lowest over epochs {r['min_source_accuracy']:.4f}), "
                   f"domain classifier {r['domain_accuracy']:.3f}.")
        out += _pseudo_labels(name, r, cfg)
    out.append("A domain classifier near 0.5 means the features no longer tell the domains apart, which is what "
               "the gradient reversal layer trains for; without it the three parts would just learn features "
               "that separate the domains. Source accuracy can dip while the features shed domain information.")
    return out


def _pseudo_labels(name: str, r: AdaptModeResult, cfg: dict[str, Any]) -> list[str]:
    rounds = r.get("pseudo_label_rounds", [])
    out = [f"{name}, pseudo-label round {rnd['round']} (epoch {rnd['epoch']}): {rnd['count']:,} target "
           f"images labelled, {100 * rnd['accuracy']:.1f}% of them correctly." for rnd in rounds]
    history = r["history"]
    if rounds and 0 < rounds[0]["epoch"] <= len(history):
        before = history[rounds[0]["epoch"] - 1]["target_accuracy"]  # end of the last epoch of DANN alone
        how = ("on randomly transformed copies (warp, colour permutation, inversion)"
               if cfg.get("pl_augment", True) else "on the images as labelled")
        out.append(f"What pseudo-labelling added: the model labels target images itself (its most confident "
                   f"predictions, no target label is read) and is trained on them {how}; target accuracy went "
                   f"from {before:.4f} with DANN alone (epoch {rounds[0]['epoch']}) to "
                   f"{r['target_accuracy']:.4f} ({100 * (r['target_accuracy'] - before):+.1f} points).")
    return out


@finding("gan")
def _gan(m: GanMetrics, cfg: dict[str, Any]) -> list[str]:
    out = [f"FID {m['fid']:.2f} and KID {m['kid']:.2f} on {m['eval_samples']} samples, against "
           f"a real-vs-real baseline (MNIST train vs test) of FID {m['fid_real_baseline']:.2f}: "
           "the closer to the baseline, the closer the samples' statistics are to real digits."]
    if "conditional_accuracy" in m:
        out.append(f"The MNIST classifier assigns {100 * m['conditional_accuracy']:.1f}% of the conditional samples "
                   "to the requested digit.")
    last = m["last_epoch_mean"]
    out.append(f"Last epoch means: D loss {last['loss_d']:.3f}, G loss {last['loss_g']:.3f}, "
               f"D(x) {last['d_x']:.2f}, D(G(z)) {last['d_g_z']:.2f} (at equilibrium both tend to 0.5).")
    out.append(f"Training took {m['train_seconds']} s ({m['batches_per_second']} batches/s).")
    return out
