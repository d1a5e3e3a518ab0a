"""Part A: an ImageNet CNN (inspection), and transfer learning."""
from __future__ import annotations

import json
import statistics

from ...experiments.inspection import DETECTOR_MIN_R
from ...models.backbones import imagenet_classes
from .base import Answer, Evidence, Figure, Unanswerable, pct, question


def _vgg_weight_estimate(layers: list[dict]) -> tuple[int, int]:
    """(conv weights, FC weights) from the layer sizes alone: k*k*c_in*c_out per 3x3 conv and
    n_in*n_out per FC layer, biases ignored -- the back-of-the-envelope count the question asks for."""
    conv = fc = 0
    channels, flat = 3, None
    for layer in layers:
        shape = layer["output_shape"]
        if layer["type"] == "Conv2d":
            conv += 9 * channels * shape[1]
            channels = shape[1]
        elif layer["type"] in ("MaxPool2d", "AdaptiveAvgPool2d") and len(shape) == 4:
            flat = shape[1] * shape[2] * shape[3]
        elif layer["type"] == "Linear":
            fc += flat * shape[-1]
            flat = shape[-1]
    return conv, fc


@question("A1", "Estimate VGG16's parameter count, knowing that the fully connected layers hold most of them.",
          ("inspect_vgg16",))
def a1(ev: Evidence, a: Answer) -> None:
    m = ev.metrics("inspect_vgg16")
    layers = json.loads((ev.study_dir / ev.folders["inspect_vgg16"][0] / "layers.json").read_text())
    conv_est, fc_est = _vgg_weight_estimate(layers)
    total, fc = m["params_total"], m["params_linear"]
    a.say(f"Counting only the weights from the layer sizes (3x3 kernels times input and output channels for "
          f"the 13 convolutions, inputs times outputs for the 3 FC layers) gives {conv_est + fc_est:,} parameters, "
          f"{fc_est:,} of them in the FC layers.", estimate=conv_est + fc_est, estimate_fc=fc_est)
    a.say(f"The exact count is {total:,}; the three FC layers hold {fc:,} ({pct(fc / total)}), so the biases "
          f"add only {total - conv_est - fc_est:,}.", params_total=total, params_fc=fc, fc_share=fc / total)
    first_fc = next(x for x in layers if x["type"] == "Linear")
    a.say(f"The first FC layer alone ({first_fc['name']}) has {first_fc['params']:,} parameters "
          f"({pct(first_fc['params'] / total)}), because it connects all 7x7x512 = 25,088 pooled activations "
          f"to 4,096 units.", first_fc_params=first_fc["params"])
    rows = [[x["name"], x["type"], "x".join(map(str, x["output_shape"][1:])), x["params"], pct(x["share"])]
            for x in layers if x["params"]]
    a.table("VGG16 layers with parameters", ["layer", "type", "output", "parameters", "share"], rows)


@question("A2", "Output size of the last layer, and its meaning.", ("inspect_vgg16", "inspect_photos"))
def a2(ev: Evidence, a: Answer) -> None:
    size = ev.metrics("inspect_vgg16")["output_size"]
    photos = ev.metrics("inspect_photos")
    sums = [p["prob_sum"] for p in photos["predictions"]]
    a.say(f"The last layer outputs {size} numbers: one score (logit) per ImageNet class.", output_size=size)
    deviation = max(abs(s - 1) for s in sums)
    verdict = "1 up to float rounding" if deviation < 1e-4 else f"1 only to within {deviation:.2g}"
    a.say(f"A softmax turns them into probabilities: over all {photos['output_size']} classes they sum to {verdict} "
          f"on each of the {len(sums)} images of this study ({min(sums):.6f}-{max(sums):.6f}).",
          prob_sum_min=min(sums), prob_sum_max=max(sums))
    best = photos["predictions"][0]["top"][0]
    a.say(f"For example the first photo's top class is '{best['class']}' with probability {best['prob']:.3f}.",
          example_prob=best["prob"])


def _name(path: str) -> str:
    return path.split("/")[-1]


@question("A3", "Apply the network to several images; comment.", ("inspect_photos",))
def a3(ev: Evidence, a: Answer) -> None:
    m = ev.metrics("inspect_photos")
    preds = m["predictions"]
    labelled = [p for p in preds if p.get("label") is not None]
    if not labelled:
        raise Unanswerable("the inspection run had no labelled photos (it needs --samples foolbox)")
    classes = imagenet_classes()
    a.say(f"On the {m['labelled_images']} labelled photos, {m['model']} is right first time for "
          f"{pct(m['top1_accuracy'])} and within its top 5 for {pct(m['top5_accuracy'])}.",
          top1_accuracy=m["top1_accuracy"], top5_accuracy=m["top5_accuracy"], labelled_images=m["labelled_images"])
    right = [p["top"][0]["prob"] for p in labelled if p["top1_correct"]]
    if right:
        a.say(f"When it is right, its top probability has median {statistics.median(right):.3f}.",
              median_prob_right=statistics.median(right))
    wrong = sorted((p for p in labelled if not p["top1_correct"]), key=lambda p: -p["top"][0]["prob"])
    if wrong:
        w = wrong[0]
        still = "still in" if w["top5_correct"] else "not even in"
        a.say(f"Its most confident mistake calls a photo of '{classes[w['label']]}' '{w['top'][0]['class']}' with "
              f"probability {w['top'][0]['prob']:.3f}; the true class is {still} its top 5.",
              worst_mistake_prob=w["top"][0]["prob"])
    else:
        a.say("It makes no top-1 mistake on these photos.")
    ood = [p for p in preds if p.get("label") is None]
    if ood:
        confs = [p["top"][0]["prob"] for p in ood]
        high = max(confs)
        verdict = ("still gives some of them a confident class (above 0.5)" if high > 0.5 else
                   "gives none of them a confident class (all at most 0.5)")
        a.say(f"On {len(ood)} inputs from outside ImageNet ({', '.join(_name(p['image']) for p in ood)}) it {verdict}: "
              f"top probability {min(confs):.3f}-{high:.3f}.", ood_max_prob=high, ood_min_prob=min(confs))
        a.explain("A softmax classifier has no 'none of these' answer: on such inputs it can only spread its "
                  "probability over the classes it knows.")
    a.table("Top-5 predictions", ["image", "label", "top-1 (p)", "top-5", "top-1 right", "top-5 right"],
            [[_name(p["image"]), classes[p["label"]] if p.get("label") is not None else None,
              f"{p['top'][0]['class']} ({p['top'][0]['prob']:.3f})", ", ".join(t["class"] for t in p["top"][:5]),
              p.get("top1_correct"), p.get("top5_correct")] for p in preds])
    a.show("top-k predictions", ev.figure("inspect_photos", "predictions.png"))


@question("A4", "Show first-conv activation maps; interpret them.", ("inspect_photos",))
def a4(ev: Evidence, a: Answer) -> None:
    m = ev.metrics("inspect_photos")
    matches = m.get("first_conv_match")
    if not matches:
        raise Unanswerable("the inspection run did not match its first-conv maps (it needs --images or --samples)")
    first = matches[0]
    n = len(first["maps"])
    edge, colour = first["edge_maps"], first["colour_maps"]
    brightness = [x for x in first["maps"] if x["reference"] == "luminance" and abs(x["r"]) >= DETECTOR_MIN_R]
    detectors, unmatched = len(edge) + len(colour), n - len(edge) - len(colour) - len(brightness)
    verdict = ("most maps are edge or colour-contrast detectors" if detectors >= n / 2 else
               "edge and colour-contrast detectors are a minority of the maps" if detectors else
               "no map is an edge or colour detector on this image")
    if brightness or unmatched:
        verdict += ("; most others follow brightness" if len(brightness) >= unmatched else
                    "; most others match no single reference (mixed orientations and colours, or textures)")
    a.say(f"On '{_name(first['image'])}', of the {n} first-layer maps {len(edge)} correlate best "
          f"(|r| >= {DETECTOR_MIN_R}) with an oriented-edge (Sobel) response, {len(colour)} with a colour-opponent one, "
          f"{len(brightness)} with brightness alone and {unmatched} with none of them this well: {verdict}.",
          edge_maps=len(edge), colour_maps=len(colour), brightness_maps=len(brightness), maps=n)
    # the photos only: what a map answers to on noise or a digit says little about the filter
    photos = [x for x, p in zip(matches, m["predictions"]) if p.get("label") is not None] or matches
    if len(photos) > 1:
        always_edge = sorted(set.intersection(*(set(x["edge_maps"]) for x in photos)))
        always_colour = sorted(set.intersection(*(set(x["colour_maps"]) for x in photos)))
        stable = [f"map(s) {', '.join(map(str, maps))} {kind} detectors"
                  for maps, kind in ((always_edge, "are edge"), (always_colour, "are colour")) if maps]
        if stable:
            a.say(f"On every one of the {len(photos)} photos, {' and '.join(stable)}: what such a map detects "
                  f"belongs to its learnt filter, not to one image.", stable_edge_maps=len(always_edge),
                  stable_colour_maps=len(always_colour))
        else:
            a.say(f"No map is an edge or colour detector on all {len(photos)} photos: on other photos the "
                  f"same filters match other references or none.")
    best = sorted(first["maps"], key=lambda x: -abs(x["r"]))[:8]
    a.table("Best-matching reference per map (first image, strongest 8)", ["map", "reference", "|r|"],
            [[x["map"], x["reference"], abs(x["r"])] for x in best])
    a.figures += [Figure("first-layer maps", f) for f in ev.figures("inspect_photos", "first_conv_*.png")[:2]]


def _variants(ev: Evidence, role: str = "transfer") -> list[dict]:
    return ev.metrics(role)["variants"]


def _row(rows: list[dict], **match) -> dict:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    raise Unanswerable(f"no transfer variant with {match}")


@question("A5", "Why not train VGG16 directly on 15-Scene?", ("transfer", "inspect_vgg16"))
def a5(ev: Evidence, a: Answer) -> None:
    m, params = ev.metrics("transfer"), ev.metrics("inspect_vgg16")["params_total"]
    scratch, svm = _row(m["variants"], head="scratch"), m["variants"][0]
    a.say(f"The task has {m['n_train']:,} training images; VGG16 has {params:,} parameters, about "
          f"{params // m['n_train']:,} per image.", n_train=m["n_train"], params=params)
    gap = scratch["train_accuracy"] - scratch["test_accuracy"]
    if scratch["train_accuracy"] < 0.9:
        fit = "it does not even fit its training images in this budget"
    elif gap > 0.1:
        fit = "it overfits: it fits the training images far better than it generalises"
    else:
        fit = "it generalises about as well as it fits"
    a.say(f"A small CNN ({scratch['params']:,} parameters) trained from scratch on the same images for "
          f"{scratch['epochs']} epoch(s) at {scratch['input_size']} px reaches {scratch['train_accuracy']:.3f} on the "
          f"training set and {scratch['test_accuracy']:.3f} on the test set ({fit}), against "
          f"{svm['test_accuracy']:.3f} for ImageNet features + a linear SVM.",
          scratch_params=scratch["params"], scratch_epochs=scratch["epochs"],
          scratch_train=scratch["train_accuracy"], scratch_test=scratch["test_accuracy"],
          transfer_test=svm["test_accuracy"])
    lead = svm["test_accuracy"] - scratch["test_accuracy"]
    if lead > 0.02:
        a.say(f"Transfer is {lead * 100:.1f} points ahead, with the backbone left as ImageNet trained it.",
              transfer_lead=lead)
    else:
        a.say(f"On this task the small network trained from scratch matches transfer ({-lead * 100:+.1f} points): "
              f"with {params / scratch['params']:,.0f} times fewer parameters than VGG16, these images are enough.",
              transfer_lead=lead)


@question("A6", "How does ImageNet pre-training help?", ("transfer", "transfer_random"))
def a6(ev: Evidence, a: Answer) -> None:
    trained, rand = ev.metrics("transfer")["variants"][0], ev.metrics("transfer_random")["variants"][0]
    a.say(f"With the same backbone ({trained['model']}), layer ({rand['layer']}) and SVM, ImageNet weights give "
          f"{trained['test_accuracy']:.3f} test accuracy and random weights {rand['test_accuracy']:.3f}: the "
          f"pre-trained filters, not the architecture, carry what transfers.",
          imagenet=trained["test_accuracy"], random=rand["test_accuracy"])


@question("A7", "Limits of feature extraction.", ("transfer",))
def a7(ev: Evidence, a: Answer) -> None:
    m = ev.metrics("transfer")
    per_class = m["per_class_accuracy"]
    worst = sorted(per_class.items(), key=lambda kv: kv[1])[:3]
    a.say("The weakest classes are " + ", ".join(f"{c} ({v:.2f})" for c, v in worst) + ".",
          **{f"class_{c}": v for c, v in worst})
    pairs = m["confusion_pairs"]
    if pairs:
        p = pairs[0]
        a.say(f"The most confused pair: {pct(p['rate'])} of '{p['true']}' test images are called '{p['predicted']}'.",
              top_confusion=p["rate"])
        a.table("Most confused pairs", ["true", "predicted", "count", "share of true class"],
                [[p["true"], p["predicted"], p["count"], p["rate"]] for p in pairs])
    heads = {r["head"]: r["test_accuracy"] for r in m["variants"] if r["head"] in ("svm", "finetune")}
    if "finetune" in heads:
        verb = "improves on" if heads["finetune"] > heads["svm"] else "does not beat"
        a.say(f"Fine-tuning end to end {verb} frozen features here ({heads['finetune']:.3f} vs {heads['svm']:.3f}).",
              finetune=heads["finetune"], frozen=heads["svm"])
    a.figures += [Figure("confusion matrix", f) for f in ev.figures("transfer", "confusion_*.png")[:1]]


@question("A8", "Impact of the layer the features come from.", ("transfer",))
def a8(ev: Evidence, a: Answer) -> None:
    rows = [r for r in ev.metrics("transfer")["variants"] if r["head"] == "svm"]
    if len(rows) < 2:
        raise Unanswerable("the transfer run compared fewer than two layers")
    best = max(rows, key=lambda r: r["test_accuracy"])
    a.say(f"Across {len(rows)} layers the SVM's test accuracy ranges from {min(r['test_accuracy'] for r in rows):.3f} "
          f"to {best['test_accuracy']:.3f}, best at '{best['layer']}' ({best['dim']} dimensions).",
          best_layer_accuracy=best["test_accuracy"], worst_layer_accuracy=min(r["test_accuracy"] for r in rows))
    a.table("Accuracy per layer (LinearSVC)", ["layer", "dimensions", "test accuracy", "seconds"],
            [[r["layer"], r["dim"], r["test_accuracy"], r.get("seconds")] for r in rows])


@question("A9", "15-Scene is grayscale; VGG16 wants RGB. How?", ("transfer",))
def a9(ev: Evidence, a: Answer) -> None:
    m = ev.metrics("transfer")
    first = m["variants"][0]
    a.say(f"Each grayscale image is repeated on the three colour channels (then normalised with ImageNet's "
          f"per-channel statistics); with that, {first['model']} features + SVM reach {first['test_accuracy']:.3f}.",
          accuracy=first["test_accuracy"])
    a.explain("The network then sees R = G = B everywhere: colour-opponent filters of the first layer respond only "
          "through the difference of their channel means, so what it learnt about colour goes unused.")


@question("A10", "Could the network itself be the classifier?", ("transfer",))
def a10(ev: Evidence, a: Answer) -> None:
    rows = ev.metrics("transfer")["variants"]
    heads = {}
    for r in rows:
        heads.setdefault(r["head"], r)
    needed = [h for h in ("svm", "linear", "finetune") if h in heads]
    if len(needed) < 2:
        raise Unanswerable("the transfer run trained fewer than two heads")
    for h in needed:
        r = heads[h]
        a.numbers[f"{h}_accuracy"] = r["test_accuracy"]
    parts = [f"{h} {heads[h]['test_accuracy']:.3f}" for h in needed]
    a.say("Yes: a new linear layer with one output per class, trained on the frozen features, or the whole network "
          "fine-tuned end to end with that layer, classifies directly. Test accuracy: " + ", ".join(parts) + ".")
    a.table("Heads", ["head", "test accuracy", "train accuracy", "seconds"],
            [[h, heads[h]["test_accuracy"], heads[h].get("train_accuracy"), heads[h].get("seconds")] for h in needed])


@question("A11", "Each improvement tried, with reasoning and results.", ("transfer",))
def a11(ev: Evidence, a: Answer) -> None:
    m = ev.metrics("transfer")
    rows = m["variants"]
    best = max(rows, key=lambda r: r["test_accuracy"])
    a.say(f"{len(rows)} variants were measured; the best is {best['model']} {best['layer']} with head "
          f"'{best['head']}' at {best['test_accuracy']:.3f} test accuracy.", best_accuracy=best["test_accuracy"],
          variants=len(rows))
    for name, sweep in m.get("c_sweep", {}).items():
        a.say(f"Cross-validation on the training set picks C = {sweep['best_C']:g}, which gives "
              f"{sweep['test_accuracy_at_best_C']:.3f} on the test set.", best_C=sweep["best_C"],
              cv_test_accuracy=sweep["test_accuracy_at_best_C"])
        break
    a.table("Every variant", ["model", "layer", "resize", "head", "C", "dimensions", "test accuracy", "seconds"],
            [[r["model"], r["layer"], r["resize"], r["head"], r.get("C"), r["dim"], r["test_accuracy"],
              r.get("seconds")] for r in rows])
    a.figures += [Figure("C sweep (cross-validation on train, test curve)", f)
                  for f in ev.figures("transfer", "c_sweep_*.png")[:1]]
