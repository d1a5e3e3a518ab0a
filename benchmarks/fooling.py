"""Fooling speed: vislab's batched ``fool`` vs a one-image-at-a-time loop, same run, same photos.

Reference (what the course notebook does, per image): the straightforward loop -- forward,
stop if the prediction is the target, backward of the target logit, x += lr * g / ||g||_2 on
the normalised image (written here in pixel space with the same mapping as vislab), clamp.
vislab: :func:`vislab.methods.fooling.fool` on the whole batch, and on batches of ``--chunk``
images (each image stops on its own; finished images leave the batch), in fp32, on the network
with BatchNorm folded into the convs (what ``vislab fool`` uses), and folded with bf16 autocast +
channels_last. Also timed: vislab's ``fool`` called one image at a time (isolates the effect of
batching). ``--device cuda`` runs every variant on the GPU (where batching is what pays).

Both sides use the course's stopping rule (``stop_on_uint8=False``) so they do the same steps;
the table checks that the iterations per image agree. Variants are interleaved over
``--repeats`` rounds after a warm-up; the table shows the median seconds and the ratio to the
reference. Writes JSON with every timing.

    flock /tmp/vislab-cpu.lock .venv/bin/python benchmarks/fooling.py --repeats 3 \\
        --json benchmarks/results/fooling.json
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from vislab.data.samples import SampleOptions, load_samples, to_batch
from vislab.io import write_json
from vislab.methods.fooling import fool
from vislab.models.backbones import build_backbone


def reference_loop(model, x: torch.Tensor, target: int, lr: float, max_iterations: int) -> list[int]:
    """The course's loop, one image at a time; returns the iterations per image."""
    std = model.std
    iterations = []
    for i in range(len(x)):
        X = x[i:i + 1].clone()
        it = 0
        while True:
            X.requires_grad_(True)
            scores = model(X)
            if scores.argmax(1).item() == target or it == max_iterations:  # .item() synchronises
                break
            scores[0, target].backward()
            g = X.grad * std  # gradient w.r.t. the normalised image
            X = (X.detach() + lr * std * g / g.norm()).clamp(0, 1)
            it += 1
        iterations.append(it)
    return iterations


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", nargs="+", default=[], help="image files/folders/.npz (default: --samples foolbox)")
    ap.add_argument("--samples", default="foolbox", help="labelled sample set when --images is not given")
    ap.add_argument("--model", default="efficientnet_lite0", help="backbone")
    ap.add_argument("--target", type=int, default=6, help="target class (6 = stingray)")
    ap.add_argument("--learning-rate", type=float, default=1.0, help="course step (normalised image)")
    ap.add_argument("--max-iterations", type=int, default=100, help="most steps per image")
    ap.add_argument("--chunk", type=int, default=5, help="size of the small batches also timed")
    ap.add_argument("--limit", type=int, default=None, help="use only the first LIMIT images")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (medians reported)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--json", default="benchmarks/results/fooling.json", help="where to write the timings")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    backbone = build_backbone(args.model, device=device)
    model = backbone.pixel_model().to(device)
    folded = backbone.pixel_model(fold_bn=True).to(device)
    folded_cl = copy.deepcopy(folded).to(memory_format=torch.channels_last)
    opts = SampleOptions(images=args.images, samples=None if args.images else args.samples, limit=args.limit)
    x = to_batch(load_samples(opts).images, backbone.preprocess).to(device)
    kw = dict(learning_rate=args.learning_rate, max_iterations=args.max_iterations, stop_on_uint8=False)
    t, bf16 = args.target, torch.bfloat16

    def chunks(m, size, amp=None):
        return sum((fool(m, x[i:i + size], t, amp_dtype=amp, **kw).iterations.tolist()
                    for i in range(0, len(x), size)), [])

    n, c = len(x), args.chunk
    variants = {
        "reference loop fp32 (course)": lambda: reference_loop(model, x, t, args.learning_rate, args.max_iterations),
        "vislab fool, one image at a time, fp32": lambda: chunks(model, 1),
        f"vislab fool, batch of {n}, fp32": lambda: chunks(model, n),
        f"vislab fool, batches of {c}, fp32": lambda: chunks(model, c),
        "vislab fool, one image at a time, BN folded": lambda: chunks(folded, 1),
        f"vislab fool, batch of {n}, BN folded": lambda: chunks(folded, n),
        f"vislab fool, batches of {c}, BN folded": lambda: chunks(folded, c),
        "vislab fool, one image at a time, folded+bf16+CL": lambda: chunks(folded_cl, 1, bf16),
        f"vislab fool, batch of {n}, folded+bf16+CL": lambda: chunks(folded_cl, n, bf16),
        f"vislab fool, batches of {c}, folded+bf16+CL": lambda: chunks(folded_cl, c, bf16),
    }

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0
    # Warm-up: every variant once with 3 steps, so that oneDNN has created its primitives for
    # every batch size and layout before anything is timed (the first variant would pay otherwise).
    full, kw["max_iterations"] = kw["max_iterations"], 3
    reference_loop(model, x, t, args.learning_rate, 3)
    for name, fn in variants.items():
        if name.startswith("vislab"):
            fn()
    kw["max_iterations"] = full
    times: dict[str, list[float]] = {k: [] for k in variants}
    iters: dict[str, list[int]] = {}
    for r in range(args.repeats):
        for name, fn in variants.items():
            iters[name], seconds = timed(fn)
            times[name].append(seconds)
            print(f"round {r + 1}/{args.repeats} {name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)

    ref_name = "reference loop fp32 (course)"
    ref = statistics.median(times[ref_name])
    rows = []
    for name in variants:
        med = statistics.median(times[name])
        same = sum(a == b for a, b in zip(iters[name], iters[ref_name]))
        rows.append({"variant": name, "median_s": round(med, 3), "times_s": [round(v, 3) for v in times[name]],
                     "speedup_vs_reference": round(ref / med, 2), "total_iterations": sum(iters[name]),
                     "iterations_equal_to_reference": f"{same}/{len(x)}"})
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, torch threads {torch.get_num_threads()}"
    print(f"\n{len(x)} images, {args.model}, target {t}, {where}")
    print(f"{'variant':50s} {'median s':>9s} {'speed-up':>9s} {'steps':>6s} {'same it':>8s}")
    for row in rows:
        print(f"{row['variant']:50s} {row['median_s']:9.2f} {row['speedup_vs_reference']:8.2f}x "
              f"{row['total_iterations']:6d} {row['iterations_equal_to_reference']:>8s}")
    by = {row["variant"]: row["median_s"] for row in rows}
    summary = {}
    for kind in ("fp32", "BN folded", "folded+bf16+CL"):
        one = by[f"vislab fool, one image at a time, {kind}"]
        for label, size in ((f"batch_of_{n}", n), (f"batches_of_{c}", c)):
            batched = by[f"vislab fool, {'batch of' if size == n else 'batches of'} {size}, {kind}"]
            summary[f"{label}_{kind}_vs_reference_loop".replace(" ", "_")] = round(ref / batched, 2)
            summary[f"{label}_{kind}_vs_one_at_a_time".replace(" ", "_")] = round(one / batched, 2)
    best = min((v, k) for k, v in by.items() if k.startswith("vislab"))
    summary["best_vislab_vs_reference_loop"] = round(ref / best[0], 2)
    summary["best_vislab_variant"] = best[1]
    for k, v in summary.items():
        print(f"{k}: {v}" + ("x" if isinstance(v, float) else ""))
    write_json(Path(args.json), {
        "benchmark": "fooling", "model": args.model, "num_images": len(x), "target": t,
        "repeats": args.repeats, "torch_threads": torch.get_num_threads(), "device": str(device),
        "machine": where if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__, "rows": rows, "summary": summary, "command": sys.argv,
    })
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
