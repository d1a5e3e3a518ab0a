"""``vislab report``: an HTML page from finished run folders, with findings from the numbers."""
from __future__ import annotations

import os
import stat

import pytest

from vislab.cli import main
from vislab.io import write_json
from vislab.config import RunConfig
from vislab.reporting.figures import plt
from vislab.runs import Run
from vislab.schemas import MetricsSchemaError


def _fake_inspect_run(folder, total, linear):
    with Run("inspect", RunConfig(out=str(folder))) as run:
        run.metrics.update(model="vgg16", weights="none", params_total=total, params_linear=linear,
                           params_conv=total - linear, params_by_type={"Linear": linear, "Conv2d": total - linear},
                           num_layers=3, output_size=1000, predictions=[{"image": "a.jpg", "top": [
                               {"index": 6, "class": "stingray", "prob": 0.75}]}], errors=[], images_failed=0)
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        run.save_figure(fig, "curve.png")


def test_report_includes_findings_metrics_and_figures(tmp_path):
    _fake_inspect_run(tmp_path / "runs" / "a", 1000, 900)
    (tmp_path / "runs" / "b.partial").mkdir()  # an unfinished run is not reported
    out = tmp_path / "report.html"
    assert main(["report", "--runs", str(tmp_path / "runs"), "--output", str(out)]) == 0
    page = out.read_text()
    assert "1 run(s)" in page
    assert "(Linear) layers hold 90.0% of all parameters" in page  # 900 / 1000, computed from the metrics
    assert "a.jpg: stingray (p = 0.750)" in page
    assert page.count("data:image/png;base64,") == 1
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o666 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_report_without_runs_is_a_clear_error(tmp_path, capsys):
    assert main(["report", "--runs", str(tmp_path), "--output", str(tmp_path / "r.html")]) == 2
    assert "no finished run folders" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def _adapt_mode(mode, target, source, **extra):
    return {"mode": mode, "upper_bound_uses_target_labels": False, "target_accuracy": target,
            "source_accuracy": source, "domain_accuracy": 0.5, "epochs": 6, "steps_per_epoch": 10, "batch_size": 64,
            "min_source_accuracy": source - 0.01, "train_seconds_this_session": 1.0, "steps_per_second": 10.0,
            "history": [], **extra}


ADAPT_COMMON = {"hparams": {"lr": 0.01}, "backgrounds": "test photos", "mnistm_sha256": {"train": "ab"}}


def test_findings_of_every_part_come_from_the_numbers():
    from vislab.reporting.findings import findings_for

    rounds = [{"round": 1, "epoch": 5, "count": 24000, "accuracy": 0.96, "fraction": None}]
    adapt = findings_for("adapt", {**_adapt_mode("dann+pl", 0.8125, 0.99, pseudo_label_rounds=rounds),
                                   **ADAPT_COMMON}, {})
    assert adapt[0] == ("dann+pl: target (MNIST-M) accuracy 0.8125, source (MNIST) 0.9900 (lowest over epochs "
                        "0.9800), domain classifier 0.500.")
    assert "24,000 target images labelled, 96.0% of them correctly" in adapt[1]
    history = [{"target_accuracy": a} for a in (0.60, 0.70, 0.75, 0.76, 0.7700, 0.85)]
    rounds = [{"round": 0, "epoch": 5, "count": 10, "accuracy": 0.9, "fraction": 0.5}]
    pl = findings_for("adapt", {**_adapt_mode("dann+pl", 0.85, 0.99, history=history, pseudo_label_rounds=rounds),
                                **ADAPT_COMMON}, {"pl_augment": False})
    assert "from 0.7700 with DANN alone (epoch 5) to 0.8500 (+8.0 points)" in pl[2]
    assert "on the images as labelled" in pl[2]
    modes = {"source-only": _adapt_mode("source-only", 0.5, 0.99), "dann": _adapt_mode("dann", 0.75, 0.98)}
    several = findings_for("adapt", {"modes": modes, "comparison_markdown": "", "target_accuracy": 0.75,
                                     "source_accuracy": 0.98, **ADAPT_COMMON}, {})
    assert several[0].startswith("source-only: target (MNIST-M) accuracy 0.5000") and several[1].startswith("dann:")
    losses = {"loss_d": 1.25, "loss_g": 0.75, "d_x": 0.5, "d_g_z": 0.25, "d_g_z_after": 0.3}
    gan = findings_for("gan", {"fid": 12.5, "kid": 3.0, "kid_std": 0.1, "fid_real_baseline": 1.5,
                               "kid_real_baseline": 0.0, "eval_samples": 10000, "eval_reference": "MNIST test",
                               "real_baseline": "MNIST train", "classifier_test_accuracy": 0.99,
                               "conditional_accuracy": 0.975, "batches": 10, "images_seen": 640, "train_seconds": 2.5,
                               "eval_seconds": 1.0, "batches_per_second": 4.0, "last_epoch_mean": losses,
                               "nonfinite_losses": 0}, {})
    assert "FID 12.50" in gan[0] and "baseline" in gan[0] and "97.5%" in gan[1]
    assert "D loss 1.250, G loss 0.750, D(x) 0.50, D(G(z)) 0.25" in gan[2]
    variant = {"model": "vgg16", "layer": "relu7", "resize": "squash", "dim": 4096, "head": "svm", "C": 1.0,
               "test_accuracy": 0.93, "fit_seconds": 0.5, "seconds": 2.5}
    transfer = findings_for("transfer", {"data": "d", "classes": ["a", "b"], "n_train": 1500, "n_test": 2985,
                                         "bad_images": 0, "bad_files": [], "C": 1.0, "l2": True, "pool": "avg",
                                         "cache_hit": False, "extracted_images": 4485, "extraction": [],
                                         "variants": [variant], "test_accuracy": 0.93, "best_variant": variant,
                                         "per_class_accuracy": {"a": 0.5, "b": 0.9},
                                         "confusion_pairs": [{"true": "a", "predicted": "b", "count": 1, "rate": 0.5}]},
                            {})
    assert "test accuracy 0.9300" in transfer[0] and "a 0.50" in transfer[2]
    assert transfer[1] == "Variant vgg16 / relu7 (squash, 4096-d, svm, C=1.0): test accuracy 0.9300."
    fool = findings_for("fool", {"model": "m", "target": 6, "target_name": "stingray", "learning_rate": 1.0,
                                 "max_iterations": 100, "step_space": "normalized", "margin": 0.0, "uint8_stop": True,
                                 "precision": "fp32", "num_images": 4, "seconds": 1.0, "success_rate": 0.5,
                                 "success_after_uint8_rate": 0.25, "median_iterations": 3, "max_iterations_taken": 100,
                                 "median_linf_255": 2.0, "median_l2_255": 150.0, "median_target_probability": 0.5,
                                 "median_iterations_successful": 2.5, "results": []}, {})
    assert fool[0].startswith("50% of 4 images") and "25% still fool" in fool[0]
    assert "L-infinity 2.0/255, L2 150/255" in fool[1]
    assert findings_for("unknown-experiment", {}, {}) == []


def test_findings_refuse_metrics_that_miss_a_key():
    from vislab.reporting.findings import findings_for

    metrics = {"model": "m", "space": "pixel", "num_images": 2, "seconds": 1.0, "top1_accuracy": None, "results": []}
    assert findings_for("saliency", metrics, {})[0].startswith("Saliency maps of 2 images on m")
    del metrics["num_images"]
    with pytest.raises(MetricsSchemaError, match="saliency metrics: missing key 'num_images'"):
        findings_for("saliency", metrics, {})


def test_report_names_the_missing_key_of_an_old_run(tmp_path, capsys):
    # a run of another vislab version: today's Run refuses to write such metrics, so write its files as it did
    old = tmp_path / "old"
    old.mkdir()
    write_json(old / "metrics.json", {"success_rate": 1.0, "num_images": 2})
    write_json(old / "manifest.json", {"experiment": "fool", "seed": 0})
    write_json(old / "config.json", {"seed": 0})
    assert main(["report", "--runs", str(tmp_path / "old"), "--output", str(tmp_path / "r.html")]) == 0
    assert "fool metrics: missing key 'model'" in capsys.readouterr().err  # no findings, the numbers still shown
    assert "success_rate" in (tmp_path / "r.html").read_text()


def test_part_a_and_b_figures_take_arrays_and_return_their_path(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from vislab.reporting.figures.inspection import feature_map_grid, first_conv_figure, predictions_figure
    from vislab.reporting.figures.visualize import fooling_figure, saliency_figure, snapshots_figure

    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    grid = feature_map_grid(torch.stack([torch.zeros(4, 4), torch.arange(16.0).view(4, 4)]), ncols=2, pad=1)
    assert grid.shape == (6, 11) and np.isnan(grid[0]).all() and np.isnan(grid[:, 5]).all()  # NaN padding
    assert (grid[1:5, 1:5] == 0).all()  # a constant map: 0, not NaN
    assert grid[1:5, 6:10].min() == 0 and grid[1:5, 6:10].max() == 1  # each map min-max scaled on its own
    pred = {"image": "a.jpg", "top": [{"index": 6, "class": "stingray", "prob": 0.75}]}
    sal = {"image": "a", "label": None, "label_name": None, "class": 6, "class_name": "stingray",
           "class_source": "predicted", "predicted": 6, "predicted_name": "stingray", "probability": 0.5,
           "map_max": 1.0}
    fool = {"image": "a", "original_prediction_name": "tench", "target_probability": 0.6, "iterations": 3,
            "success_after_uint8": True, "linf_255": 4.0}
    paths = [first_conv_figure(images[0], torch.rand(5, 4, 4), "m", "conv1", tmp_path / "a" / "conv.png"),
             predictions_figure([images[0]], [pred], tmp_path / "pred.png"),
             saliency_figure(images, images[:, 0], [sal] * 3, tmp_path / "sal.png", cols=2),
             fooling_figure(images[0], images[1], fool, "stingray", tmp_path / "fool.png"),
             snapshots_figure([(1, images[:2]), (2, images[1:])], ["x", "y"], tmp_path / "snap.png",
                              probs_by_step={1: torch.tensor([0.1, 0.2]), 2: torch.tensor([0.3, 0.4])}, title="t")]
    for path in paths:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 100


def test_a_run_with_metrics_off_its_schema_is_refused_and_left_unfinished(tmp_path):
    with pytest.raises(MetricsSchemaError, match="missing key 'model'"):
        with Run("fool", RunConfig(out=str(tmp_path / "new"))) as run:
            run.metrics.update(success_rate=1.0, num_images=2)
    assert not (tmp_path / "new").exists() and not (tmp_path / "new.partial").exists()


def test_summary_rows_mark_numbers_measured_on_substitute_data():
    from vislab.reporting.study_report import summary_rows
    from vislab.study.questions.base import Answer

    a9, c1 = Answer("A9", "q"), Answer("C1", "q")
    a9.numbers, a9.substituted = {"accuracy": 0.9033}, True
    c1.numbers = {"dann_target": 0.5421, "source_only_target": 0.4337}
    rows = {r["measure"]: r for r in summary_rows([a9, c1])}
    svm = rows["transfer: features + LinearSVC, test accuracy"]
    assert (svm["value"], svm["data"]) == ("0.903", "substitute (see A9)")
    assert rows["DANN target accuracy"]["data"] == "as in SPEC.md"
    assert rows["DANN target accuracy"]["value"] == "0.542" and len(rows) == 3  # only what the answers recorded


def test_the_dann_summary_row_comes_from_c4_when_the_study_has_no_c1():
    from vislab.reporting.study_report import summary_rows
    from vislab.study.questions.base import Answer

    c4 = Answer("C4", "q")
    c4.numbers = {"dann_target": 0.8053, "pl_target": 0.9622}
    rows = {r["measure"]: r for r in summary_rows([c4])}
    assert (rows["DANN target accuracy"]["value"], rows["DANN target accuracy"]["question"]) == ("0.805", "C4")
    c1 = Answer("C1", "q")
    c1.numbers = {"dann_target": 0.7}
    assert {r["measure"]: r for r in summary_rows([c1, c4])}["DANN target accuracy"]["question"] == "C1"
