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
            out.append(f"The fully connected layers hold {100 * m['params_linear'] / total:.1f}% of all parameters "
                       "although they do a small share of the computation.")
    if m.get("output_size"):
        out.append(f"The last layer has {m['output_size']} outputs: one score per ImageNet class; "
                   "a softmax turns them into class probabilities.")
    for p in m.get("predictions", [])[:10]:
        top = p["top"][0]
        out.append(f"{p['image']}: {top['class']} (p = {top['prob']:.3f}).")
    if m.get("images_failed"):
        out.append(f"{m['images_failed']} image(s) could not be read (see errors in metrics.json).")
    return out
