"""Part B: saliency maps, adversarial (fooling) images, class visualisation."""
from __future__ import annotations

import statistics

from .base import Answer, Evidence, Figure, Unanswerable, pct, question


def _need(m: dict, key: str, option: str) -> dict:
    if not m.get(key):
        raise Unanswerable(f"the run did not measure {key} (it needs {option})")
    return m[key]


# an AUC difference (on a 0-1 scale) below this is within what the choice of random order moves
CLEAR_FAITHFULNESS = 0.05


@question("B1", "Show and interpret saliency maps.", ("saliency",))
def b1(ev: Evidence, a: Answer) -> None:
    m = ev.metrics("saliency")
    d = _need(m, "deletion", "--deletion-steps")
    a.say(f"The figure shows the maps (|d score / d pixel|, max over colour channels) of {m['num_images']} photos.",
          images=m["num_images"])
    a.explain("A bright pixel is one whose small change would move the class score most.")
    better, n = sum(r["saliency_auc"] < r["random_auc"] for r in d["per_image"]), len(d["per_image"])
    if d["faithfulness"] >= CLEAR_FAITHFULNESS and 2 * better > n:
        verdict = ("faithful: removing the most salient pixels first destroys the class probability faster than "
                   "removing random ones")
    elif d["faithfulness"] > 0:
        verdict = ("hardly better than a random order: the salient-first curve falls "
                   + ("only slightly " if d["faithfulness"] < CLEAR_FAITHFULNESS else "")
                   + "faster on average" + (", and not for most photos" if 2 * better <= n else ""))
    else:
        verdict = ("not faithful here: removing the most salient pixels first lowers the class probability no "
                   "faster than removing random ones")
    a.say(f"Deletion test ({d['steps']} steps, removed pixels replaced by a blurred copy): the area under the "
          f"class-probability curve is {d['saliency_auc']:.3f} in saliency order vs {d['random_auc']:.3f} in random "
          f"order (better than random for {better} of {n} photos), so the maps are {verdict}.",
          saliency_auc=d["saliency_auc"], random_auc=d["random_auc"], faithfulness=d["faithfulness"],
          images_better_than_random=better)
    for name, title in (("saliency.png", "saliency maps"), ("deletion.png", "deletion curves")):
        a.show(title, ev.figure("saliency", name))


@question("B2", "Limits of this way of visualising pixel importance.", ("saliency",))
def b2(ev: Evidence, a: Answer) -> None:
    m = ev.metrics("saliency")
    sg, sanity = _need(m, "smoothgrad", "--smoothgrad-samples"), _need(m, "sanity", "--sanity-check")
    change = (f"lowers their total variation {sg['tv_vanilla'] / max(sg['tv_smooth'], 1e-12):.1f}-fold"
              if sg["tv_smooth"] < sg["tv_vanilla"] else "does not lower their total variation here")
    a.say(f"Noise: averaging the gradient over {sg['samples']} noisy copies (SmoothGrad, noise {sg['sigma']:g} of "
          f"the pixel range) {change} ({sg['tv_vanilla']:.3g} -> {sg['tv_smooth']:.3g}, maps scaled to max 1).",
          tv_vanilla=sg["tv_vanilla"], tv_smooth=sg["tv_smooth"])
    if sg["tv_smooth"] >= sg["tv_vanilla"]:
        a.explain("A likely reason: the measure scales each map to its own maximum, so a plain map dominated by a few "
              "very bright pixels scores low even where it looks speckled; compare the maps in the figure.")
    rho = sanity["spearman_mean"]
    if rho is None:
        a.notes.append("The sanity check's maps were constant, so no rank correlation could be measured.")
    else:
        verdict = ("the maps depend on what the network learnt" if rho < 0.5 else
                   "much of the map survives without the learnt weights: it partly shows the image's edges, "
                   "not the model's reasons")
        a.say(f"Sanity check (weights randomised: {sanity['randomized']}): the Spearman rank correlation between the "
              f"maps of the trained and the randomised network is {rho:.2f}, so {verdict}.", sanity_spearman=rho)
    a.explain("A gradient is also local: it says which pixels would change the score most, not which evidence the "
              "network used, and it misses interactions between pixels.")
    for name, title in (("smoothgrad.png", "vanilla vs SmoothGrad"), ("sanity.png", "trained vs randomised")):
        a.show(title, ev.figure("saliency", name))


@question("B3", "Can the technique serve another purpose?", ("saliency",))
def b3(ev: Evidence, a: Answer) -> None:
    loc = _need(ev.metrics("saliency"), "localization", "--localize-threshold")
    a.say(f"Weakly supervised localisation: smoothing each map ({loc['smooth_sigma']:g} px), thresholding it at "
          f"{loc['threshold']:g} of its maximum and keeping the largest connected region gives a box covering "
          f"{pct(loc['box_area_fraction_mean'])} of the image on average, from a classifier trained without boxes.",
          box_area_fraction=loc["box_area_fraction_mean"])
    if loc.get("iou_mean") is not None:
        a.say(f"Against the known boxes, the mean IoU is {loc['iou_mean']:.2f}.", iou=loc["iou_mean"])
    else:
        a.notes.append("The sample photos have no ground-truth boxes, so no IoU is measured: judge the boxes in the "
                       "figure.")
    a.show("boxes from the thresholded maps", ev.figure("saliency", "boxes.png"))


@question("B4", "Another network: compare.", ("saliency", "saliency_other"))
def b4(ev: Evidence, a: Answer) -> None:
    import math

    from ...io import torch_load
    from ...methods.saliency_eval import rank_correlation

    first, other = (torch_load(ev.study_dir / ev.folders[r][0] / "saliency_maps.pt")["maps"]
                    for r in ("saliency", "saliency_other"))
    rhos = [float(r) for r in rank_correlation(first, other) if math.isfinite(r)]  # resizes other to first's size
    if not rhos:
        raise Unanswerable("every map of one of the two runs is constant: no rank correlation to compare")
    mean = sum(rhos) / len(rhos)
    m1, m2 = ev.metrics("saliency"), ev.metrics("saliency_other")
    verdict = "largely agree" if mean > 0.5 else "agree only loosely" if mean > 0.2 else "disagree"
    a.say(f"The maps of {m1['model']} and {m2['model']} on the same {len(rhos)} photos {verdict}: mean Spearman "
          f"rank correlation {mean:.2f} (range {min(rhos):.2f} to {max(rhos):.2f}).", spearman_mean=mean)
    if m1["top1_accuracy"] is not None and m2["top1_accuracy"] is not None:
        a.say(f"Top-1 accuracy on these photos: {m1['top1_accuracy']:.2f} vs {m2['top1_accuracy']:.2f}.",
              top1_first=m1["top1_accuracy"], top1_other=m2["top1_accuracy"])
    for r in ("saliency", "saliency_other"):
        a.show(f"maps of {ev.metrics(r)['model']}", ev.figure(r, "saliency.png"))


# an L-inf change of 8/255 is the budget the adversarial literature commonly treats as imperceptible
IMPERCEPTIBLE_LINF_255 = 8


def _attack(m: dict) -> str:
    return m.get("attack", "naive")  # runs made before --attack existed: naive


def _attack_name(m: dict) -> str:
    if _attack(m) == "naive":
        return "the naive gradient ascent"
    budget = f"{m['attack'].upper()} (L-inf budget {m['eps_255']:g}/255"
    return budget + (f", {m['pgd_steps']} steps of {m['pgd_alpha_255']:g}/255)" if m["attack"] == "pgd" else ")")


@question("B5", "Show and interpret fooling images.", ("fool",))
def b5(ev: Evidence, a: Answer) -> None:
    m = ev.metrics("fool")
    a.say(f"{_attack_name(m).capitalize()} on the '{m['target_name']}' score turned {pct(m['success_rate'])} of "
          f"{m['num_images']} photos into '{m['target_name']}' for the network ({pct(m['success_after_uint8_rate'])} "
          f"still after saving as 8-bit images), in a median of {m['median_iterations']:g} steps.",
          success_rate=m["success_rate"], success_after_uint8=m["success_after_uint8_rate"],
          median_iterations=m["median_iterations"])
    size = "within" if m["median_linf_255"] <= IMPERCEPTIBLE_LINF_255 else "above"
    a.say(f"Size of the changes: median L-inf {m['median_linf_255']:.1f}/255, {size} the "
          f"{IMPERCEPTIBLE_LINF_255}/255 budget commonly treated as imperceptible (compare the images in the "
          f"figures), and L2 {m['median_l2_255']:.0f} (0-255 units); median target confidence "
          f"{m['median_target_probability']:.2f}.", median_linf_255=m["median_linf_255"],
          median_l2_255=m["median_l2_255"], median_target_probability=m["median_target_probability"])
    a.figures += [Figure("original, fooled, difference, x10", f) for f in ev.figures("fool", "fool_*.png")[:2]]


@question("B6", "Practical consequences for CNNs.", ("fool",))
def b6(ev: Evidence, a: Answer) -> None:
    m = ev.metrics("fool")
    rob = _need(m, "robustness", "--check-models / --jpeg-quality / --resize-scale")
    if not rob["fooled_images"]:
        raise Unanswerable("no saved image fooled the network, so there is nothing to check for robustness")
    a.say(f"Of the {rob['fooled_images']} images whose saved 8-bit version fools {m['model']}:",
          fooled_images=rob["fooled_images"])
    for model, rate in rob["transfer"].items():
        a.say(f"{pct(rate)} also fool {model} ({_attack_name(m)} transfers {'poorly' if rate < 0.3 else 'often'});",
              **{f"transfer_{model}": rate})
    survived = [(f"JPEG compression at quality {rob['jpeg_quality']}", rob["jpeg"], "jpeg"),
                (f"a resize by {rob['resize_scale']:g} and back", rob["resize"], "resize")]
    for what, rate, key in survived:
        if rate is not None:
            a.say(f"{pct(rate)} still fool it after {what}.", **{key: rate})
    rates = [rate for _, rate, _ in survived if rate is not None]
    if rates:
        a.say("So mild preprocessing " + ("undoes most of these perturbations" if max(rates) < 0.5 else
                                          "leaves many of these perturbations working") + " in this measurement.")
    a.explain("The consequence: anyone with the weights can steer a deployed CNN with changes a person barely sees "
              "(B5); whether the changes work elsewhere depends on the transfer and preprocessing rates above.")


@question("B7", "Limits of this naive method; alternatives.", ("fool", "fool_pgd"))
def b7(ev: Evidence, a: Answer) -> None:
    naive, budgeted = ev.metrics("fool"), ev.metrics("fool_pgd")
    a.explain("The naive method stops as soon as the class flips, with no bound on the change; a budgeted attack "
              "(FGSM, PGD) fixes the largest pixel change in advance and may use all of it.")
    a.say(f"Naive: success {pct(naive['success_rate'])}, median L-inf {naive['median_linf_255']:.1f}/255. "
          f"{_attack_name(budgeted)}: success {pct(budgeted['success_rate'])}, median L-inf "
          f"{budgeted['median_linf_255']:.1f}/255, {budgeted['median_iterations']:g} steps.",
          naive_success=naive["success_rate"],
          pgd_success=budgeted["success_rate"], naive_linf=naive["median_linf_255"],
          pgd_linf=budgeted["median_linf_255"])
    smaller = budgeted["median_linf_255"] <= naive["median_linf_255"]
    as_often = budgeted["success_rate"] >= naive["success_rate"]
    a.say(f"The budgeted attack fools {'as many or more' if as_often else 'fewer'} images with a "
          f"{'smaller or equal' if smaller else 'larger'} largest pixel change, and with a median target confidence "
          f"of {budgeted['median_target_probability']:.2f} vs {naive['median_target_probability']:.2f}.",
          naive_confidence=naive["median_target_probability"], pgd_confidence=budgeted["median_target_probability"])
    t_naive, t_pgd = naive.get("robustness", {}).get("transfer", {}), budgeted.get("robustness", {}).get("transfer", {})
    for model in sorted(t_naive.keys() & t_pgd.keys()):
        if t_naive[model] is not None and t_pgd[model] is not None:
            a.say(f"Transfer to {model}: {pct(t_naive[model])} naive vs {pct(t_pgd[model])} {_attack(budgeted)}.",
                  **{f"naive_transfer_{model}": t_naive[model], f"pgd_transfer_{model}": t_pgd[model]})
    a.explain("Other alternatives: minimal-perturbation attacks (DeepFool, Carlini-Wagner), universal "
              "perturbations and physical patches.")
    a.table("Attacks", ["attack", "success", "median L-inf /255", "median L2 (0-255)", "median steps"],
            [[_attack(m), m["success_rate"], m["median_linf_255"], m["median_l2_255"], m["median_iterations"]]
             for m in (naive, budgeted)])


def _probabilities(results: list[dict]) -> str:
    return ", ".join(f"{r['target_name']} {r['probability']:.2f}" for r in results)


def _trajectory(result: dict) -> list[tuple[str, float]]:
    """(steps done, target probability) at each snapshot, in order (empty for runs before it was written)."""
    traj = result.get("probability_by_iterations", {})
    return [(s, traj[s]) for s in sorted(traj, key=int)]


def _along(traj: list[tuple[str, float]]) -> str:
    return ", ".join(f"{p:.2f} after {s}" for s, p in traj)


def _rise(traj: list[tuple[str, float]]) -> str:
    """How the probability moved along the snapshots, as measured."""
    ps = [p for _, p in traj]
    if all(b >= a for a, b in zip(ps, ps[1:])):
        return "rising at every snapshot"
    return "rising overall but not at every snapshot" if ps[-1] > ps[0] else "not rising overall"


@question("B8", "Show and interpret class visualisations.", ("classviz",))
def b8(ev: Evidence, a: Answer) -> None:
    m = ev.metrics("classviz")
    res = m["results"]
    a.say(f"After {m['iterations']} steps of regularised gradient ascent from noise, the network assigns "
          f"{_probabilities(res)} to the images made for those classes.",
          **{f"p_{r['target']}": r["probability"] for r in res})
    hits = [r for r in res if r["predicted"] == r["target"]]
    misses = [f"the {r['target_name']} image as '{r['predicted_name']}'" for r in res if r not in hits]
    a.say(f"For {len(hits)} of the {len(res)} images the network's top class is the target itself"
          + (f"; it classifies {', '.join(misses)}." if misses else "."), target_top1=len(hits) / len(res))
    traj = _trajectory(res[0])
    if len(traj) > 1:
        a.say(f"Along the ascent the {res[0]['target_name']} probability goes {_along(traj)} steps "
              f"({_rise(traj)}).", **{f"p_{res[0]['target']}_at_{s}": p for s, p in traj})
    a.explain("The images are not photos: they tend to repeat parts the class score relies on (textures, legs, "
              "eyes) at many positions, because nothing in the objective asks for one coherent object.")
    a.show("snapshots along the ascent", ev.figure("classviz", "snapshots.png"))


def _mean_by(rows: list[dict], key: str, steps: str) -> dict[float, float]:
    """Mean target probability after ``steps`` per value of ``key`` (over the other setting)."""
    values = sorted({r[key] for r in rows})
    return {v: statistics.mean(r["probability_by_iterations"][steps] for r in rows if r[key] == v) for v in values}


SAME_P = 0.005  # probabilities closer than this print the same at 2 decimals: no difference is claimed


def _trend(by: dict[float, float]) -> str:
    """'up', 'down', 'flat' (no visible difference) or 'mixed', as the values of ``by`` go in key order."""
    ps = list(by.values())
    if max(ps) - min(ps) < SAME_P:
        return "flat"
    steps = [b - a for a, b in zip(ps, ps[1:])]
    return "up" if all(d > 0 for d in steps) else "down" if all(d < 0 for d in steps) else "mixed"


def _compare(p: float, q: float) -> str:
    return "about the same as" if abs(p - q) < SAME_P else "higher than" if p > q else "lower than"


@question("B9", "Vary iterations, learning rate and regularisation.", ("classviz_sweep",))
def b9(ev: Evidence, a: Answer) -> None:
    sweep = ev.metrics("classviz_sweep")["sweep"]
    settings = sweep["results"]
    steps = sorted(settings[0]["probability_by_iterations"], key=int)
    first, last = steps[0], steps[-1]
    rows = [[r["learning_rate"], r["l2_reg"]] + [r["probability_by_iterations"][s] for s in steps] for r in settings]
    best = max(rows, key=lambda r: r[-1])
    worst = min(rows, key=lambda r: r[-1])
    a.say(f"Over {len(rows)} settings the final target probability ranges from {worst[-1]:.2f} (lr {worst[0]:g}, "
          f"L2 {worst[1]:g}) to {best[-1]:.2f} (lr {best[0]:g}, L2 {best[1]:g}).", best_p=best[-1], worst_p=worst[-1])
    if len(steps) > 1:
        rising = sum(r[-1] > r[2] for r in rows)
        a.say(f"Iterations: in {rising} of the {len(rows)} settings the probability is higher after {last} steps "
              f"than after {first}.", rising_with_iterations=rising)
    by_lr = _mean_by(settings, "learning_rate", first)
    if len(by_lr) > 1:
        verdict = {"up": "a larger learning rate gets there sooner",
                   "flat": "the learning rate makes no visible difference this early"}.get(
            _trend(by_lr), "a larger learning rate is not faster throughout this range")
        a.say(f"Learning rate: after {first} steps the mean probability is "
              + ", ".join(f"{p:.2f} at lr {lr:g}" for lr, p in by_lr.items()) + f": {verdict}.",
              **{f"p_after_{first}_lr_{lr:g}": p for lr, p in by_lr.items()})
    by_reg = _mean_by(settings, "l2_reg", last)
    if len(by_reg) > 1:
        verdict = {"down": "the stronger L2 term costs probability",
                   "flat": "the L2 weight makes no visible difference to it"}.get(
            _trend(by_reg), "the L2 weight does not lower the final probability steadily over this range")
        a.say("L2 weight: the mean final probability is " + ", ".join(f"{p:.2f} at L2 {reg:g}"
                                                                         for reg, p in by_reg.items())
              + f": {verdict}.", **{f"p_final_l2_{reg:g}": p for reg, p in by_reg.items()})
    a.explain("The L2 term pulls the image towards the mean (grey), so stronger values give greyer, smoother "
              "images; a large learning rate paints harsher, high-contrast patterns (see the grid).")
    a.table(f"Target probability (class {sweep['target']}) by setting and iterations",
            ["lr", "L2"] + [f"{s} its" for s in steps], rows)
    a.show("sweep grid", ev.figure("classviz_sweep", "sweep.png"))


@question("B10", "Start from a real image instead of noise; interest?", ("classviz", "classviz_init"))
def b10(ev: Evidence, a: Answer) -> None:
    init = ev.metrics("classviz_init")["results"][0]
    from_noise = ev.metrics("classviz")["results"]
    noise = next((r for r in from_noise if r["target"] == init["target"]), None)
    if noise is None:
        raise Unanswerable(f"the run from noise did not visualise class {init['target']}, the one started from a photo")
    a.say(f"Starting from a photo instead of noise, the ascent towards '{init['target_name']}' ends at probability "
          f"{init['probability']:.2f} (from noise: {noise['probability']:.2f}); the photo's top class at the end is "
          f"{'the target' if init['predicted'] == init['target'] else repr(init['predicted_name'])}.",
          p_init=init["probability"], p_noise=noise["probability"])
    traj, traj_noise = dict(_trajectory(init)), dict(_trajectory(noise))
    if traj:
        a.say(f"Along the way from the photo: {_along(list(traj.items()))} steps.",
              **{f"p_init_at_{s}": p for s, p in traj.items()})
    common = [s for s in traj if s in traj_noise]
    if common:
        s = common[0]
        a.say(f"After {s} steps the photo's probability ({traj[s]:.2f}) is {_compare(traj[s], traj_noise[s])} "
              f"the noise start's ({traj_noise[s]:.2f}).", **{f"p_noise_at_{s}": traj_noise[s]})
    a.explain("The interest: the class's features are painted into a real scene, which shows what would have to "
              "change for the network to change its mind (the idea behind DeepDream).")
    a.show("from a photo", ev.figure("classviz_init", "snapshots.png"))


@question("B11", "Another network.", ("classviz", "classviz_other"))
def b11(ev: Evidence, a: Answer) -> None:
    m1, m2 = ev.metrics("classviz"), ev.metrics("classviz_other")
    other = {r["target"]: r for r in m2["results"]}
    pairs = [(r, other[r["target"]]) for r in m1["results"] if r["target"] in other]
    if not pairs:
        raise Unanswerable("the two classviz runs visualised no class in common")
    r1, r2 = pairs[0]
    a.say(f"The same class ({r1['target_name']}) visualised with {m1['model']} reaches {r1['probability']:.2f} and "
          f"with {m2['model']} {r2['probability']:.2f}.", p_first=r1["probability"], p_other=r2["probability"])
    if len(pairs) > 1:
        mean1, mean2 = (statistics.mean(r[i]["probability"] for r in pairs) for i in (0, 1))
        verdict = ("neither is driven visibly further by its own ascent" if abs(mean1 - mean2) < SAME_P else
                   f"{m1['model'] if mean1 > mean2 else m2['model']} is driven further by its own ascent")
        a.say(f"Over the {len(pairs)} classes visualised with both, the mean final probability is {mean1:.2f} for "
              f"{m1['model']} and {mean2:.2f} for {m2['model']} ({verdict}).",
              mean_p_first=mean1, mean_p_other=mean2)
    a.explain("Each image shows what that network's own features for the class look like: compare them side by "
              "side below.")
    a.table("Final target probability per network", ["class", m1["model"], m2["model"]],
            [[r1_["target_name"], r1_["probability"], r2_["probability"]] for r1_, r2_ in pairs])
    for r in ("classviz", "classviz_other"):
        a.show(ev.metrics(r)["model"], ev.figure(r, "snapshots.png"))
