"""The study's inspect (A1-A4) and classviz (B8-B11) sections: their roles plan in both profiles,
and the answers' sentences are chosen by the measured values of hand-written metrics."""
from __future__ import annotations

import json

import pytest

from vislab.study.plan import plan_runs
from vislab.study.profile import load_profile
from vislab.study.questions import QUESTIONS
from vislab.study.questions.base import Answer, Evidence, Unanswerable

ROLES = ["inspect_vgg16", "inspect_photos", "classviz", "classviz_sweep", "classviz_init", "classviz_other"]


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_inspect_and_classviz_roles_plan(profile):
    specs, problems = plan_runs(ROLES, load_profile(profile), {"ood": ["digit.png", "noise.png"], "photo": "p.jpg"},
                                seeds=1, device="cpu")
    assert problems == {}
    photos = specs["inspect_photos"][0].config
    assert photos["samples"] == "foolbox" and photos["images"] == ["digit.png", "noise.png"]
    assert specs["classviz_init"][0].config["init_image"] == "p.jpg"


def _answer(tmp_path, qid: str, metrics_by_role: dict[str, dict]) -> Answer:
    folders = {}
    for role, metrics in metrics_by_role.items():
        folder = tmp_path / "runs" / role
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        folders[role] = [f"runs/{role}"]
    answer = Answer(qid, QUESTIONS[qid].text)
    QUESTIONS[qid].answer(Evidence(tmp_path, folders), answer)
    return answer


def _pred(image: str, label: int | None, top: list[int], prob: float) -> dict:
    return {"image": image, "label": label, "prob_sum": 1.0,
            "top": [{"index": k, "class": f"c{k}", "prob": prob if i == 0 else 0.01} for i, k in enumerate(top)],
            "top1_correct": None if label is None else top[0] == label,
            "top5_correct": None if label is None else label in top}


def _match(image: str, edge: list[int], colour: list[int], refs: list[tuple[str, float]]) -> dict:
    return {"image": image, "maps": [{"map": i, "reference": ref, "r": r} for i, (ref, r) in enumerate(refs)],
            "edge_maps": edge, "colour_maps": colour}


def _inspect(preds: list[dict], matches: list[dict] | None = None) -> dict:
    labelled = [p for p in preds if p["label"] is not None]
    share = (lambda key: sum(p[key] for p in labelled) / len(labelled)) if labelled else (lambda key: None)
    metrics = {"model": "net", "output_size": 1000, "predictions": preds, "labelled_images": len(labelled),
               "top1_accuracy": share("top1_correct"), "top5_accuracy": share("top5_correct")}
    return {**metrics, "first_conv_match": matches} if matches is not None else metrics


def test_a3_accuracy_mistakes_and_out_of_distribution_inputs(tmp_path):
    preds = [_pred("imagenet_00_1", 1, [1, 2], 0.9), _pred("imagenet_01_3", 3, [4, 3], 0.6),
             _pred("imagenet_02_5", 5, [5, 6], 0.7), _pred("/x/noise.png", None, [7, 8], 0.8)]
    a = _answer(tmp_path, "A3", {"inspect_photos": _inspect(preds)})
    assert a.numbers["top1_accuracy"] == 2 / 3 and a.numbers["top5_accuracy"] == 1.0
    assert "right first time for 66.7% and within its top 5 for 100.0%" in a.text
    assert "median 0.800" in a.text  # of 0.9 and 0.7, the two right answers
    assert "'c4' with probability 0.600; the true class is still in its top 5" in a.text
    assert "noise.png) it still gives some of them a confident class" in a.text and a.numbers["ood_max_prob"] == 0.8
    right = [_pred("imagenet_00_1", 1, [1, 2], 0.9), _pred("/x/noise.png", None, [7, 8], 0.3)]
    a = _answer(tmp_path / "b", "A3", {"inspect_photos": _inspect(right)})
    assert "no top-1 mistake" in a.text and "gives none of them a confident class" in a.text
    with pytest.raises(Unanswerable, match="--samples foolbox"):
        _answer(tmp_path / "c", "A3", {"inspect_photos": _inspect([_pred("/x/noise.png", None, [7], 0.3)])})


def test_a2_probabilities_sum_to_one(tmp_path):
    preds = [{**_pred("a", 1, [1], 0.9), "prob_sum": 0.9999999}, {**_pred("b", None, [2], 0.5), "prob_sum": 1.0000001}]
    a = _answer(tmp_path, "A2", {"inspect_vgg16": {"output_size": 1000}, "inspect_photos": _inspect(preds)})
    assert "sum to 1 up to float rounding on each of the 2 images" in a.text
    assert a.numbers["prob_sum_min"] == 0.9999999 and a.numbers["prob_sum_max"] == 1.0000001


def test_a4_counts_detectors_and_the_maps_stable_across_photos(tmp_path):
    refs = [("sobel_x", 0.9), ("red_green", -0.7), ("luminance", 0.8), ("sobel_y", 0.2)]
    preds = [_pred("imagenet_00_1", 1, [1], 0.9), _pred("imagenet_01_2", 2, [2], 0.9), _pred("noise.png", None, [3], 0.2)]
    matches = [_match("imagenet_00_1", [0], [1], refs), _match("imagenet_01_2", [0], [], refs),
               _match("noise.png", [], [], refs)]  # the noise input does not count for stability
    a = _answer(tmp_path, "A4", {"inspect_photos": _inspect(preds, matches)})
    assert ("of the 4 first-layer maps 1 correlate best (|r| >= 0.5) with an oriented-edge (Sobel) response, 1 with a "
            "colour-opponent one, 1 with brightness alone and 1 with none of them this well: most maps are edge or "
            "colour-contrast detectors") in a.text
    assert "On every one of the 2 photos, map(s) 0 are edge detectors:" in a.text
    assert a.numbers["stable_edge_maps"] == 1 and a.numbers["stable_colour_maps"] == 0
    matches[1] = _match("imagenet_01_2", [], [], refs)
    a = _answer(tmp_path / "b", "A4", {"inspect_photos": _inspect(preds, matches)})
    assert "No map is an edge or colour detector on all 2 photos" in a.text


def _viz(model: str, targets: list[int], trajectories: list[dict[str, float]], predicted: list[int] | None = None
         ) -> dict:
    predicted = predicted or targets
    return {"model": model, "iterations": 4, "results": [
        {"target": k, "target_name": f"c{k}", "probability": traj[max(traj, key=int)], "predicted": p,
         "predicted_name": f"c{p}", "probability_by_iterations": traj}
        for k, traj, p in zip(targets, trajectories, predicted)]}


def test_b8_names_misses_and_the_trajectory(tmp_path):
    m = _viz("net", [76, 113], [{"2": 0.1, "4": 0.9}, {"2": 0.3, "4": 0.2}], predicted=[76, 6])
    a = _answer(tmp_path, "B8", {"classviz": m})
    assert "c76 0.90, c113 0.20" in a.text and a.numbers["target_top1"] == 0.5
    assert "For 1 of the 2 images the network's top class is the target itself; it classifies the c113 image as 'c6'" \
        in a.text
    assert "goes 0.10 after 2, 0.90 after 4 steps (rising at every snapshot)" in a.text
    assert "nothing in the objective asks for one coherent object" in " ".join(a.explanations)  # background, apart
    assert "coherent object" not in a.text


def test_b9_verdicts_follow_the_sweep(tmp_path):
    def setting(lr, reg, p2, p4):
        return {"learning_rate": lr, "l2_reg": reg, "probability_by_iterations": {"2": p2, "4": p4}}

    sweep = {"target": 76, "seconds": 1.0, "results": [setting(1, 1e-4, 0.1, 0.8), setting(1, 1e-2, 0.1, 0.4),
                                                       setting(5, 1e-4, 0.5, 0.9), setting(5, 1e-2, 0.3, 0.2)]}
    a = _answer(tmp_path, "B9", {"classviz_sweep": {"sweep": sweep}})
    assert "from 0.20 (lr 5, L2 0.01) to 0.90 (lr 5, L2 0.0001)" in a.text
    assert "in 3 of the 4 settings the probability is higher after 4 steps than after 2" in a.text
    assert "0.10 at lr 1, 0.40 at lr 5: a larger learning rate gets there sooner" in a.text
    assert "0.85 at L2 0.0001, 0.30 at L2 0.01: the stronger L2 term costs probability" in a.text
    flat = {**sweep, "results": [setting(lr, reg, 0.5, 0.5) for lr in (1, 5) for reg in (1e-4, 1e-2)]}
    a = _answer(tmp_path / "b", "B9", {"classviz_sweep": {"sweep": flat}})
    assert "makes no visible difference this early" in a.text and "makes no visible difference to it" in a.text


def test_b10_compares_the_photo_start_with_noise(tmp_path):
    noise = _viz("net", [113, 76], [{"2": 0.0, "4": 0.1}, {"2": 0.05, "4": 0.6}])
    init = _viz("net", [76], [{"2": 0.4, "4": 0.95}])
    a = _answer(tmp_path, "B10", {"classviz": noise, "classviz_init": init})
    assert "ends at probability 0.95 (from noise: 0.60)" in a.text  # the noise run's image of the same class
    assert "After 2 steps the photo's probability (0.40) is higher than the noise start's (0.05)" in a.text
    assert a.numbers["p_init_at_2"] == 0.4 and a.numbers["p_noise_at_2"] == 0.05
    with pytest.raises(Unanswerable, match="class 76"):
        _answer(tmp_path / "b", "B10", {"classviz": _viz("net", [113], [{"4": 0.1}]), "classviz_init": init})


def test_b11_compares_the_classes_both_networks_visualised(tmp_path):
    one = _viz("net1", [76, 113, 6], [{"4": 0.9}, {"4": 0.5}, {"4": 0.1}])
    other = _viz("net2", [113, 76], [{"4": 0.2}, {"4": 0.3}])
    a = _answer(tmp_path, "B11", {"classviz": one, "classviz_other": other})
    assert "(c76) visualised with net1 reaches 0.90 and with net2 0.30" in a.text
    assert "Over the 2 classes visualised with both, the mean final probability is 0.70 for net1 and 0.25 for net2 " \
           "(net1 is driven further by its own ascent)" in a.text
    assert a.tables[0].rows == [["c76", 0.9, 0.3], ["c113", 0.5, 0.2]]
