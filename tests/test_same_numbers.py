"""benchmarks/same_numbers.py: two runs' metrics compared value by value, timings left out."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "same_numbers.py"
_spec = importlib.util.spec_from_file_location("same_numbers", SCRIPT)
same_numbers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(same_numbers)

OLD = {"target_accuracy": 0.8053, "seconds": 1410.2, "history": [{"epoch": 1, "loss": 0.25, "steps_per_second": 9.5},
                                                                 {"epoch": 2, "loss": 0.125, "train_seconds": 60.0}],
       "cache_hit": False, "fid": None}


def test_leaves_name_every_value_by_its_path():
    assert same_numbers.leaves({"a": {"b": [1, {"c": 2}]}, "d": "x"}) == {"a.b[0]": 1, "a.b[1].c": 2, "d": "x"}


def test_identical_metrics_but_other_timings_are_the_same_numbers():
    new = json.loads(json.dumps(OLD))
    new["seconds"], new["history"][0]["steps_per_second"], new["history"][1]["train_seconds"] = 1.0, 99.0, 1.0
    result = same_numbers.compare(OLD, new)
    # 10 leaves; 3 timings (seconds, steps_per_second, train_seconds); 7 compared
    assert (result["shared"], result["timings_left_out"], result["identical"]) == (10, 3, 7)
    assert result["differing"] == {} and result["only_old"] == result["only_new"] == []


def test_a_changed_value_is_named_with_both_sides_and_bit_for_bit_is_the_default():
    new = json.loads(json.dumps(OLD))
    new["history"][1]["loss"] = 0.125 * (1 + 1e-12)  # one ulp-scale change must count
    new["cache_hit"] = True
    new["extra"] = 1
    del new["fid"]
    result = same_numbers.compare(OLD, new)
    assert result["differing"] == {"history[1].loss": [0.125, 0.125 * (1 + 1e-12)], "cache_hit": [False, True]}
    assert result["only_old"] == ["fid"] and result["only_new"] == ["extra"]
    assert "history[1].loss" not in same_numbers.compare(OLD, new, rtol=1e-9)["differing"]
    assert "cache_hit" in same_numbers.compare(OLD, new, rtol=1e-9)["differing"]  # booleans are not numbers here


def test_cli_exit_status_and_unreadable_input(tmp_path: Path):
    old_run, new_run = tmp_path / "old", tmp_path / "new"
    for run, acc in ((old_run, 0.8053), (new_run, 0.8054)):
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({**OLD, "target_accuracy": acc}))

    def cli(*args):
        return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)

    same = cli(old_run, old_run / "metrics.json")
    assert same.returncode == 0
    assert same.stdout.startswith("10 shared values, 3 timings left out: 7 identical, 0 differing")
    out = tmp_path / "cmp.json"
    differ = cli(old_run, new_run, "--json", out)
    assert differ.returncode == 1 and "differs  target_accuracy: 0.8053 -> 0.8054" in differ.stdout
    assert json.loads(out.read_text())["differing"] == {"target_accuracy": [0.8053, 0.8054]}
    assert cli(old_run, new_run, "--rtol", "1e-3").returncode == 0
    missing = cli(tmp_path / "nope", new_run)
    assert missing.returncode == 2 and "nope" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("a, b, equal", [(1, 1.0, True), (float("nan"), float("nan"), True), (True, 1, False),
                                         ("fp32", "fp32", True), (None, 0, False)])
def test_same_is_exact_equality_with_nan_equal_to_nan(a, b, equal):
    assert same_numbers.same(a, b, 0.0) is equal
