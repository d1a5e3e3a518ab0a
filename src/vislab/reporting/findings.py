"""Sentences that answer each experiment's questions (SPEC) from the numbers a run measured.

One function per experiment name, registered in ``FINDINGS``; each reads ``metrics.json`` (and
the resolved config) and returns plain sentences. No number here is typed in: all come from the run.
"""
from __future__ import annotations

from typing import Any, Callable

Findings = Callable[[dict[str, Any], dict[str, Any]], list[str]]
FINDINGS: dict[str, Findings] = {}


def finding(experiment: str) -> Callable[[Findings], Findings]:
    def add(fn: Findings) -> Findings:
        FINDINGS[experiment] = fn
        return fn

    return add


def findings_for(experiment: str, metrics: dict[str, Any], config: dict[str, Any]) -> list[str]:
    fn = FINDINGS.get(experiment)
    return fn(metrics, config) if fn else []


@finding("inspect")
def _inspect(m: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    total = m.get("params_total", 0)
    out = [f"{cfg.get('model')} has {total:,} parameters."]
    if total:
        by_type = m.get("params_by_type", {})
        shares = ", ".join(f"{k} {v:,} ({100 * v / total:.1f}%)" for k, v in by_type.items())
        out.append(f"Where they are: {shares}.")
        if m.get("params_linear"):
            out.append(f"The fully connected (Linear) layers hold {100 * m['params_linear'] / total:.1f}% "
                       "of all parameters.")
    if m.get("output_size"):
        out.append(f"The last layer has {m['output_size']} outputs: one score per ImageNet class; "
                   "a softmax turns them into class probabilities.")
    for p in m.get("predictions", [])[:10]:
        top = p["top"][0]
        out.append(f"{p['image']}: {top['class']} (p = {top['prob']:.3f}).")
    if m.get("images_failed"):
        out.append(f"{m['images_failed']} image(s) could not be read (see errors in metrics.json).")
    return out


@finding("saliency")
def _saliency(m: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    out = [f"Saliency maps of {m.get('num_images')} images on {m.get('model')} in {m.get('seconds')} s "
           "(one backward pass per batch): |d logit / d input|, max over colour channels."]
    if m.get("top1_accuracy") is not None:
        out.append(f"The network's top-1 agrees with the labels on {100 * m['top1_accuracy']:.0f}% of them; "
                   "a map explains the chosen class's score, right or wrong, not where the object is for sure.")
    out.append("Bright pixels are those whose small change moves the score most. Where they gather on the object "
               "the maps can seed weakly supervised localisation or segmentation; they are noisy and only a "
               "first-order, per-pixel view of the decision.")
    return out


@finding("fool")
def _fool(m: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    out = [f"{100 * m.get('success_rate', 0):.0f}% of {m.get('num_images')} images were pushed to "
           f"'{m.get('target_name')}' ({m.get('target')}) within {m.get('max_iterations')} steps "
           f"(median {m.get('median_iterations')} steps, at most {m.get('max_iterations_taken')}); "
           f"{100 * m.get('success_after_uint8_rate', 0):.0f}% still fool once saved as 8-bit PNG."]
    if m.get("median_linf_255") is not None:
        out.append(f"Median perturbation: L-infinity {m['median_linf_255']:.1f}/255, L2 {m.get('median_l2_255', 0):.0f}/255 "
                   f"-- barely visible (see the x10 difference images), with median target probability "
                   f"{m.get('median_target_probability', 0):.2f}.")
    out.append("In practice: a classifier's decision can be changed by an imperceptible change, so its outputs "
               "cannot be trusted against an adversary. This naive method needs the gradient (white box) and stops "
               "just across the boundary; stronger attacks (PGD, C&W) and defences (adversarial training) go further.")
    return out


@finding("classviz")
def _classviz(m: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    out = []
    for r in m.get("results", []):
        out.append(f"Class {r['target']} ({r['target_name']}): after {m.get('iterations')} steps from "
                   f"{m.get('init')} the network gives it probability {r['probability']:.3f}.")
    out.append(f"{m.get('iterations')} steps took {m.get('seconds')} s. The image shows textures and parts the "
               "network associates with the class (legs, hair, eyes), repeated over the image, not a natural "
               "photo: the score is maximised, not realism; L2, blur and jitter regularise towards natural images.")
    sweep = m.get("sweep")
    if sweep:
        for e in sweep["results"]:
            probs = ", ".join(f"{p:.2f} at {s}" for s, p in e["probability_by_iterations"].items())
            out.append(f"Sweep, learning_rate {e['learning_rate']:g}, l2_reg {e['l2_reg']:g}: "
                       f"target probability {probs} iterations.")
    return out


@finding("transfer")
def _transfer(m: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    out = [f"{m.get('n_train')} training and {m.get('n_test')} test images; test accuracy "
           f"{m.get('test_accuracy', 0):.4f} with LinearSVC(C={m.get('C')}) on "
           f"{'L2-normalised ' if m.get('l2') else ''}features of a frozen ImageNet network."]
    for v in m.get("variants", []):
        out.append(f"Variant {v.get('model')} / {v.get('layer')} ({v.get('resize')}, {v.get('dim')}-d, "
                   f"{v.get('head')}, C={v.get('C')}): test accuracy {v.get('test_accuracy', 0):.4f}.")
    per_class = m.get("per_class_accuracy") or {}
    if per_class:
        worst = sorted(per_class.items(), key=lambda kv: kv[1])[:3]
        out.append("Hardest classes: " + ", ".join(f"{k} {v:.2f}" for k, v in worst) + ".")
    out.append("Why not train from scratch: 1,500 labelled images cannot fit millions of parameters (VGG16 has "
               "138M) without overfitting; ImageNet pre-training supplies generic features, and only a linear "
               "classifier is learned here. Grayscale images are repeated to three channels.")
    if m.get("cache_hit"):
        out.append("All features came from the cache: no image went through the network in this run.")
    return out


@finding("adapt")
def _adapt(m: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    modes = m.get("modes") or ({m["mode"]: m} if "mode" in m else {})
    out = []
    for name, r in modes.items():
        line = (f"{name}: target (MNIST-M) accuracy {r.get('target_accuracy', 0):.4f}, source (MNIST) "
                f"{r.get('source_accuracy', 0):.4f}")
        if r.get("min_source_accuracy") is not None:
            line += f" (lowest over epochs {r['min_source_accuracy']:.4f})"
        if r.get("domain_accuracy") is not None:
            line += f", domain classifier {r['domain_accuracy']:.3f}"
        out.append(line + ".")
        rounds = r.get("pseudo_label_rounds") or []
        for rnd in rounds:
            out.append(f"{name}, pseudo-label round {rnd['round']} (epoch {rnd['epoch']}): {rnd['count']:,} target "
                       f"images labelled, {100 * rnd['accuracy']:.1f}% of them correctly.")
        history = r.get("history") or []
        if rounds and 0 < rounds[0]["epoch"] <= len(history):
            before = history[rounds[0]["epoch"] - 1]["target_accuracy"]  # end of the last epoch of DANN alone
            how = ("on randomly transformed copies (warp, colour permutation, inversion)"
                   if cfg.get("pl_augment", True) else "on the images as labelled")
            out.append(f"What pseudo-labelling added: the model labels target images itself (its most confident "
                       f"predictions, no target label is read) and is trained on them {how}; target accuracy went "
                       f"from {before:.4f} with DANN alone (epoch {rounds[0]['epoch']}) to "
                       f"{r.get('target_accuracy', 0):.4f} ({100 * (r.get('target_accuracy', 0) - before):+.1f} points).")
    out.append("A domain classifier near 0.5 means the features no longer tell the domains apart, which is what "
               "the gradient reversal layer trains for; without it the three parts would just learn features "
               "that separate the domains. Source accuracy can dip while the features shed domain information.")
    return out


@finding("gan")
def _gan(m: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    out = []
    if m.get("fid") is not None:
        out.append(f"FID {m['fid']:.2f} and KID {m.get('kid', 0):.2f} on {m.get('eval_samples')} samples, against "
                   f"a real-vs-real baseline (MNIST train vs test) of FID {m.get('fid_real_baseline', 0):.2f}: "
                   "the closer to the baseline, the closer the samples' statistics are to real digits.")
    if m.get("conditional_accuracy") is not None:
        out.append(f"The MNIST classifier assigns {100 * m['conditional_accuracy']:.1f}% of the conditional samples "
                   "to the requested digit.")
    last = m.get("last_epoch_mean") or {}
    if last:
        out.append(f"Last epoch means: D loss {last.get('loss_d', 0):.3f}, G loss {last.get('loss_g', 0):.3f}, "
                   f"D(x) {last.get('d_x', 0):.2f}, D(G(z)) {last.get('d_g_z', 0):.2f} (at equilibrium both tend to 0.5).")
    if m.get("train_seconds") is not None:
        out.append(f"Training took {m['train_seconds']} s ({m.get('batches_per_second')} batches/s).")
    return out
