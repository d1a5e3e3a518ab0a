"""Tables of ``vislab adapt`` results: the modes of one run (its comparison.md), and the command
``vislab adapt-summary`` (mean +- std over seeds of finished runs, per mode)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..config import RunConfig, add_command, option
from ..errors import UserError
from ..io import write_text
from ..reporting.tables import markdown_table
from ..runs import Run, read_run_json
from ..methods.dann import ALGORITHMS


COMPARISON_COLUMNS = {"mode": "mode", "epochs": "epochs", "source_accuracy": "source acc",
                      "target_accuracy": "target acc (MNIST-M)", "domain_accuracy": "domain acc",
                      "steps_per_second": "steps/s"}
SUMMARY_COLUMNS = {"mode": "mode", "runs": "runs (seeds)", "target": "target acc (MNIST-M) mean +- std",
                   "source": "source acc mean +- std", "min_source_accuracy": "min source acc over epochs"}


def comparison_table(results: dict[str, dict]) -> str:
    """The modes of one ``vislab adapt`` run, one row each (``results``: mode -> its metrics)."""
    rows = [{**m, "mode": mode + (" (upper bound: uses target labels)" if m["upper_bound_uses_target_labels"] else "")}
            for mode, m in results.items()]
    formats = {"source_accuracy": ".4f", "target_accuracy": ".4f", "domain_accuracy": ".3f", "steps_per_second": str}
    return markdown_table(rows, COMPARISON_COLUMNS, formats) + "\n"


@dataclasses.dataclass
class AdaptSummaryConfig(RunConfig):
    runs: list[str] = option([], "finished `vislab adapt` run folders (any modes and seeds) to tabulate")


def read_mode_results(paths: list[str]) -> dict[str, list[dict]]:
    """mode -> the final metrics of that mode in each run folder (with its ``seed`` and ``run``)."""
    per_mode: dict[str, list[dict]] = {}
    for p in paths:
        f = Path(p) / "metrics.json"
        if not f.is_file():
            raise UserError(f"{p}: no metrics.json; give finished `vislab adapt` run folders")
        m = read_run_json(f)
        config = Path(p) / "config.json"
        seed = read_run_json(config, required=False).get("seed")
        for mode, r in (m["modes"].items() if "modes" in m else [(m["mode"], m)]):
            per_mode.setdefault(mode, []).append({**r, "seed": seed, "run": str(p)})
    return per_mode


def summarise_runs(paths: list[str]) -> tuple[dict, str]:
    """Mean +- std (over seeds) of final accuracies per mode, from run folders' metrics.json."""
    per_mode = read_mode_results(paths)
    summary: dict[str, dict] = {}
    rows = []
    for mode in [m for m in ALGORITHMS if m in per_mode]:
        rs = per_mode[mode]
        t = np.array([r["target_accuracy"] for r in rs])
        s_ = np.array([r["source_accuracy"] for r in rs])
        v = summary[mode] = {"n": len(rs), "seeds": [r["seed"] for r in rs], "target_mean": t.mean(),
                             "target_std": t.std(ddof=1) if len(t) > 1 else None, "source_mean": s_.mean(),
                             "source_std": s_.std(ddof=1) if len(s_) > 1 else None,
                             "min_source_accuracy": min(r["min_source_accuracy"] for r in rs),
                             "target_accuracies": t.tolist(), "runs": [r["run"] for r in rs]}
        rows.append({"mode": mode, "runs": f"{v['n']} ({', '.join(str(x) for x in v['seeds'])})",
                     "target": _mean_std(v["target_mean"], v["target_std"]),
                     "source": _mean_std(v["source_mean"], v["source_std"]),
                     "min_source_accuracy": v["min_source_accuracy"]})
    return summary, markdown_table(rows, SUMMARY_COLUMNS, {"min_source_accuracy": ".4f"}) + "\n"


def _mean_std(mean: float, std: float | None) -> str:
    return f"{mean:.4f}" + (f" +- {std:.4f}" if std is not None else " (1 run)")


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
