"""Fooling speed: vislab's batched ``fool`` vs a one-image-at-a-time loop, same run, same photos.

Reference (what the course notebook does, per image): the straightforward loop -- forward,
stop if the prediction is the target, backward of the target logit, x += lr * g / ||g||_2 on
the normalised image (written here in pixel space with the same mapping as vislab), clamp.
vislab: :func:`vislab.methods.fooling.fool` on the whole batch, and on batches of ``--chunk``
images (each image stops on its own; finished images leave the batch), in fp32, on the network
with BatchNorm folded into the convs (what ``vislab fool`` uses), and folded with bf16 autocast (where native) +
channels_last. Also timed: vislab's ``fool`` called one image at a time (isolates the effect of
batching). ``--device cuda`` runs every variant on the GPU (where batching is what pays).

Both sides use the course's stopping rule (``stop_on_uint8=False``) so they do the same steps;
the table checks that the iterations per image agree. Each variant runs in its own spawned process
(``isolated.py``), the vislab ones with ``vislab.allocator.retain_freed_memory`` as in the
``vislab`` command, the reference without and with it; after a warm-up (every variant once with 3
steps) the processes take turns over ``--repeats`` rounds; the table shows the median seconds and
the ratio to the reference. Writes JSON with every timing.

    flock /tmp/vislab-cpu.lock .venv/bin/python benchmarks/fooling.py --repeats 3 \\
        --json benchmarks/results/fooling.json
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

import torch

from isolated import Loop, time_loops
from vislab.data.samples import load_samples, to_batch
from vislab.io import write_json
from vislab.methods.fooling import fool
from vislab.models.backbones import build_backbone
from vislab.precision import precision_name, resolve_precision


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


def build_variant(kind: str, size: int | None, bf16: bool, args: argparse.Namespace):
    """One variant's step (a full fooling run over the images, returning the iterations per image),
    built in its own process. ``kind``: reference, fp32, folded or folded_cl; ``size``: images per
    ``fool`` call (None: all)."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    backbone = build_backbone(args.model, device=device)
    model = backbone.pixel_model(fold_bn=kind.startswith("folded")).to(device)
    if kind == "folded_cl":
        model = model.to(memory_format=torch.channels_last)
    samples = load_samples(args.images, None if args.images else args.samples, args.limit)
    x = to_batch(samples.images, backbone.preprocess).to(device)
    amp = resolve_precision("auto" if bf16 else "fp32", device)  # bf16 only where native (emulated, it is slower)

    def run(max_iterations: int) -> list[int]:
        if kind == "reference":
            out = reference_loop(model, x, args.target, args.learning_rate, max_iterations)
        else:
            n = size or len(x)
            out = sum((fool(model, x[i:i + n], args.target, autocast_dtype=amp, learning_rate=args.learning_rate,
                            max_iterations=max_iterations, stop_on_uint8=False).iterations.tolist()
                       for i in range(0, len(x), n)), [])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    run(3)  # warm-up: oneDNN / cuDNN create their primitives for this batch size and layout
    return lambda: run(args.max_iterations)


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

    n = len(load_samples(args.images, None if args.images else args.samples, args.limit).images)
    c = args.chunk
    device = torch.device(args.device)
    ref_name = "reference loop fp32 (course)"
    variants = {ref_name: Loop(build_variant, ("reference", None, False, args), vislab_allocator=False),
                "reference loop, vislab's allocator policy": Loop(build_variant, ("reference", None, False, args))}
    names: dict[tuple[str, str], str] = {}  # (network, batching) -> variant name
    sizes = {"one_at_a_time": (1, "one image at a time"), f"batch_of_{n}": (n, f"batch of {n}"),
             f"batches_of_{c}": (c, f"batches of {c}")}
    for kind, label, bf16 in (("fp32", "fp32", False), ("folded", "BN folded", False),
                              ("folded_cl", f"folded+{precision_name(resolve_precision('auto', device))}+CL", True)):
        for batching, (size, what) in sizes.items():
            names[label, batching] = f"vislab fool, {what}, {label}"
            variants[names[label, batching]] = Loop(build_variant, (kind, size, bf16, args))
    timings = time_loops(variants, steps=1, repeats=args.repeats, warmup=0,
                         report=lambda m: print(m, file=sys.stderr, flush=True))
    times = {name: [1 / r for r in t.rates] for name, t in timings.items()}
    iters = {name: t.last for name, t in timings.items()}
    ref = statistics.median(times[ref_name])
    rows = []
    for name in variants:
        med = statistics.median(times[name])
        same = sum(a == b for a, b in zip(iters[name], iters[ref_name]))
        rows.append({"variant": name, "median_s": round(med, 3), "times_s": [round(v, 3) for v in times[name]],
                     "speedup_vs_reference": round(ref / med, 2), "total_iterations": sum(iters[name]),
                     "iterations_equal_to_reference": f"{same}/{n}"})
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU, torch threads {timings[ref_name].torch_threads}")
    print(f"\n{n} images, {args.model}, target {args.target}, {where}")
    print(f"{'variant':50s} {'median s':>9s} {'speed-up':>9s} {'steps':>6s} {'same it':>8s}")
    for row in rows:
        print(f"{row['variant']:50s} {row['median_s']:9.2f} {row['speedup_vs_reference']:8.2f}x "
              f"{row['total_iterations']:6d} {row['iterations_equal_to_reference']:>8s}")
    by = {row["variant"]: row["median_s"] for row in rows}
    summary = {}
    for (kind, batching), name in names.items():
        if batching != "one_at_a_time":
            key = f"{batching}_{kind}".replace(" ", "_")
            summary[f"{key}_vs_reference_loop"] = round(ref / by[name], 2)
            summary[f"{key}_vs_one_at_a_time"] = round(by[names[kind, "one_at_a_time"]] / by[name], 2)
    best = min((v, k) for k, v in by.items() if k.startswith("vislab"))
    summary["best_vislab_vs_reference_loop"] = round(ref / best[0], 2)
    summary["best_vislab_variant"] = best[1]
    for k, v in summary.items():
        print(f"{k}: {v}" + ("x" if isinstance(v, float) else ""))
    write_json(Path(args.json), {
        "benchmark": "fooling", "model": args.model, "num_images": n, "target": args.target,
        "repeats": args.repeats, "torch_threads": timings[ref_name].torch_threads, "device": str(device),
        "process_per_variant": True,
        "machine": where if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__, "rows": rows, "summary": summary, "command": sys.argv,
    })
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
