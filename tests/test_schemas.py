"""The metrics schemas: check_metrics names the missing, unknown or ill-typed key, NotRequired
keys may be left out, and adapt's two shapes (one mode, several) are told apart."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from vislab.io import write_json
from vislab.schemas import SCHEMAS, FoolMetrics, InspectMetrics, MetricsSchemaError, check_metrics

FOOL_IMAGE = {"image": "a", "label": 3, "label_name": "tiger shark", "original_prediction": 3,
              "original_prediction_name": "tiger shark", "original_target_probability": 0.01, "success": True,
              "iterations": 4, "target_probability": 0.6, "l2": 0.5, "l2_255": 127.5, "linf": 0.02,
              "linf_255": 5.1, "success_after_uint8": True, "target_probability_after_uint8": 0.55,
              "linf_255_after_uint8": 5.0}
FOOL = {"model": "efficientnet_lite0", "target": 6, "target_name": "stingray", "learning_rate": 1.0,
        "max_iterations": 100, "step_space": "normalized", "margin": 0.0, "uint8_stop": True, "precision": "fp32",
        "num_images": 1, "seconds": 0.5, "success_rate": 1.0, "success_after_uint8_rate": 1.0,
        "median_iterations": 4, "max_iterations_taken": 4, "median_linf_255": 5.1, "median_l2_255": 127.5,
        "median_target_probability": 0.6, "median_iterations_successful": 4, "results": [FOOL_IMAGE]}
INSPECT = {"model": "vgg16", "weights": "none", "params_total": 10, "params_linear": 6, "params_conv": 4,
           "params_by_type": {"Linear": 6, "Conv2d": 4}, "num_layers": 2, "output_size": 1000}


def test_valid_metrics_pass_and_come_back_unchanged():
    assert check_metrics("fool", FOOL) is FOOL
    assert check_metrics("inspect", INSPECT) is INSPECT  # predictions, errors: NotRequired
    with_images = {**INSPECT, "predictions": [{"image": "a.jpg", "top": [{"index": 6, "class": "stingray",
                                                                          "prob": 0.5}]}],
                   "errors": [], "images_failed": 0}
    check_metrics("inspect", with_images)


def test_inspect_labels_accuracy_and_first_conv_match():
    pred = {"image": "imagenet_00_243", "top": [{"index": 243, "class": "bull mastiff", "prob": 0.7}], "label": 243,
            "prob_sum": 1.0, "top1_correct": True, "top5_correct": True}
    match = {"image": "imagenet_00_243", "maps": [{"map": 0, "reference": "sobel_x", "r": -0.8}], "edge_maps": [0],
             "colour_maps": []}
    labelled = {**INSPECT, "predictions": [pred, {**pred, "image": "noise.png", "label": None, "top1_correct": None,
                                                  "top5_correct": None}],
                "errors": [], "images_failed": 0, "labelled_images": 1, "top1_accuracy": 1.0, "top5_accuracy": 1.0,
                "first_conv_match": [match, {**match, "image": "noise.png"}]}
    check_metrics("inspect", labelled)
    check_metrics("inspect", {**labelled, "top1_accuracy": None, "top5_accuracy": None})  # no labelled image
    for where, broken, expected in [
            (r"predictions\[0\]\.top1_correct", {**labelled, "predictions": [{**pred, "top1_correct": 1}]}, "bool"),
            (r"predictions\[0\]\.label", {**labelled, "predictions": [{**pred, "label": "243"}]}, "int"),
            (r"first_conv_match\[0\]\.edge_maps\[0\]", {**labelled, "first_conv_match": [{**match, "edge_maps": [0.5]}]},
             "int"),
            (r"first_conv_match\[0\]\.maps\[0\]", {**labelled, "first_conv_match": [{**match, "maps": [{"map": 0}]}]},
             "missing key 'reference'")]:
        with pytest.raises(MetricsSchemaError, match=rf"inspect metrics: {where}: .*{expected}"):
            check_metrics("inspect", broken)


@pytest.mark.parametrize("kind,metrics,schema", [("fool", FOOL, FoolMetrics), ("inspect", INSPECT, InspectMetrics)])
def test_every_required_key_is_required_by_name(kind, metrics, schema):
    assert schema.__required_keys__ <= metrics.keys()
    for key in schema.__required_keys__:
        broken = {k: v for k, v in metrics.items() if k != key}
        with pytest.raises(MetricsSchemaError, match=rf"^{kind} metrics: missing key '{key}' \("):
            check_metrics(kind, broken)


def test_nested_problems_name_their_path():
    broken = copy.deepcopy(FOOL)
    del broken["results"][0]["linf_255"]
    with pytest.raises(MetricsSchemaError, match=r"fool metrics: results\[0\]: missing key 'linf_255' \(float\)"):
        check_metrics("fool", broken)
    broken["results"][0]["linf_255"] = "5.1"
    with pytest.raises(MetricsSchemaError, match=r"results\[0\]\.linf_255: expected float, got str '5.1'"):
        check_metrics("fool", broken)
    broken = {**INSPECT, "params_by_type": {"Linear": 6.5}}
    with pytest.raises(MetricsSchemaError, match=r"params_by_type\.Linear: expected int, got float 6.5"):
        check_metrics("inspect", broken)


def test_types_are_checked_strictly_but_ints_pass_as_floats():
    check_metrics("fool", {**FOOL, "seconds": 1, "median_iterations": 4.5})  # JSON may write 1 for 1.0
    check_metrics("fool", {**FOOL, "target": np.int64(6), "seconds": np.float64(0.5)})  # before JSON
    for key, value, expected in [("target", True, "int"), ("uint8_stop", 1, "bool"), ("seconds", None, "float"),
                                 ("step_space", "normalised", "one of 'normalized', 'pixel'"),
                                 ("results", {"a": 1}, "a list")]:
        with pytest.raises(MetricsSchemaError, match=f"fool metrics: {key}: expected {expected}"):
            check_metrics("fool", {**FOOL, key: value})
    check_metrics("fool", {**FOOL, "median_iterations_successful": None})  # float | None


def test_unknown_keys_and_kinds_are_refused():
    with pytest.raises(MetricsSchemaError, match="unknown key 'succes_rate' .not in FoolMetrics"):
        check_metrics("fool", {**FOOL, "succes_rate": 1.0})
    with pytest.raises(MetricsSchemaError, match="no metrics schema for experiment 'nope'"):
        check_metrics("nope", {})
    with pytest.raises(MetricsSchemaError, match="expected a mapping"):
        check_metrics("inspect", [INSPECT])


def test_nulls_written_for_non_finite_numbers_pass_where_listed(tmp_path):
    nan = copy.deepcopy(FOOL)
    nan["results"][0]["l2"] = float("nan")
    check_metrics("fool", nan)  # in memory, NaN is a float
    write_json(tmp_path / "m.json", nan)  # strict JSON: null, listed under non_finite
    back = json.loads((tmp_path / "m.json").read_text())
    assert back["results"][0]["l2"] is None and "results[0].l2" in back["non_finite"]["values"]
    check_metrics("fool", back)
    back["results"][0]["l2_255"] = None  # a null that is not listed
    with pytest.raises(MetricsSchemaError, match=r"results\[0\]\.l2_255: expected float, got NoneType None"):
        check_metrics("fool", back)
    with pytest.raises(MetricsSchemaError, match="non_finite: missing key 'values'"):
        check_metrics("fool", {**FOOL, "non_finite": {"reason": "x"}})


def _mode(mode: str) -> dict:
    return {"mode": mode, "upper_bound_uses_target_labels": False, "target_accuracy": 0.8, "source_accuracy": 0.99,
            "domain_accuracy": 0.5, "epochs": 1, "steps_per_epoch": 2, "batch_size": 8, "min_source_accuracy": 0.9,
            "train_seconds_this_session": 1.0, "steps_per_second": 2.0,
            "history": [{"epoch": 1, "target_accuracy": 0.8, "train_loss_class": 0.1}]}


def test_adapt_has_two_shapes_and_errors_name_the_closer_one():
    common = {"hparams": {"lr": 0.01}, "backgrounds": "photos", "mnistm_sha256": {"train": "ab"}}
    check_metrics("adapt", {**_mode("dann"), **common})
    several = {"modes": {"source-only": _mode("source-only"), "dann": _mode("dann")}, "comparison_markdown": "|",
               "target_accuracy": 0.8, "source_accuracy": 0.99, **common}
    check_metrics("adapt", several)
    several["modes"]["dann"].pop("domain_accuracy")
    with pytest.raises(MetricsSchemaError, match=r"adapt metrics: modes\.dann: missing key 'domain_accuracy'"):
        check_metrics("adapt", several)
    one = {**_mode("dann"), **common}
    del one["backgrounds"]
    with pytest.raises(MetricsSchemaError, match="adapt metrics: missing key 'backgrounds'"):
        check_metrics("adapt", one)


def test_every_schema_is_complete_typing():
    """Each schema's keys resolve to types the checker knows (no typo'd names), and a required
    key is reported missing from an empty document."""
    check_metrics("gan-compare", {"variants": []})
    with pytest.raises(MetricsSchemaError, match=r"gan-compare metrics: variants\[0\]: missing key 'variant'"):
        check_metrics("gan-compare", {"variants": [{}]})
    for kind in SCHEMAS:
        with pytest.raises(MetricsSchemaError, match=f"^{kind} metrics: missing key '"):
            check_metrics(kind, {})
