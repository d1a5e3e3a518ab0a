"""Why DANN throughput is bounded on a CPU: the heavy ops of one step, reference settings vs vislab's.

Times, one by one, the operations that dominate a DANN step (batch 64 + 64 through the SPEC feature
extractor): each convolution's forward, backward-data and backward-weights, and each max-pool's
forward + backward, in the reference's setting (fp32, channels-first) and in vislab's (bf16,
channels_last), medians of ``--repeats`` blocks. It prints the achieved TFLOP/s of the
convolutions (how close they are to the CPU's peak) and the sum of vislab's times: the part of
the step no loop restructuring removes, to set against the step time a target ratio needs.

    flock /tmp/vislab-cpu.lock .venv/bin/python benchmarks/dann_step_floor.py
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from vislab.io import write_json

N = 128  # 64 source + 64 target images go through the feature extractor together


def median_ms(fn, iters: int, repeats: int) -> float:
    for _ in range(max(5, iters // 10)):
        fn()
    blocks = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        blocks.append((time.perf_counter() - t) / iters * 1e3)
    return statistics.median(blocks)


def conv_ops(cin: int, cout: int, size: int, dtype, layout, needs_input_grad: bool):
    """{name: (fn, flops)} for one 5x5 pad-2 convolution of the feature extractor."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, cin, size, size, generator=g).to(dtype).contiguous(memory_format=layout)
    w = torch.randn(cout, cin, 5, 5, generator=g).to(dtype).contiguous(memory_format=layout)
    b = torch.randn(cout, generator=g).to(dtype)
    gy = torch.randn_like(F.conv2d(x, w, b, padding=2))
    flops = 2 * N * size * size * cout * cin * 25

    def backward(mask):
        return lambda: torch.ops.aten.convolution_backward(gy, x, w, [cout], [1, 1], [2, 2], [1, 1], False,
                                                           [0, 0], 1, mask)
    ops = {"forward": (lambda: F.conv2d(x, w, b, padding=2), flops),
           "backward weights": (backward([False, True, True]), flops)}
    if needs_input_grad:
        ops["backward data"] = (backward([True, False, False]), flops)
    return ops


def pool_op(channels: int, size: int, dtype, layout):
    x = torch.randn(N, channels, size, size).to(dtype).contiguous(memory_format=layout).requires_grad_()

    def forward_backward():
        y = F.max_pool2d(x, 2)
        y.backward(torch.ones_like(y))
    return forward_backward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=100, help="calls per timed block (default 100)")
    ap.add_argument("--repeats", type=int, default=5, help="timed blocks per op; medians reported (default 5)")
    ap.add_argument("--out", default="benchmarks/results/dann_step_floor.json",
                    help="JSON file to write (default benchmarks/results/dann_step_floor.json)")
    args = ap.parse_args()
    settings = {"reference (fp32, channels-first)": (torch.float32, torch.contiguous_format),
                "vislab (bf16, channels_last)": (torch.bfloat16, torch.channels_last)}
    rows = []
    print(f"{'op':34s} {'reference ms':>13s} {'vislab ms':>10s} {'ratio':>6s} {'vislab TFLOP/s':>15s}")
    for layer, (cin, cout, size, input_grad) in {"conv1 3->32 28x28": (3, 32, 28, False),
                                                  "conv2 32->48 14x14": (32, 48, 14, True)}.items():
        ops = {s: conv_ops(cin, cout, size, *dt, input_grad) for s, dt in settings.items()}
        for op in ops[next(iter(settings))]:
            ms = {s: median_ms(ops[s][op][0], args.iters, args.repeats) for s in settings}
            rows.append({"op": f"{layer} {op}", "ms": ms, "tflops": {s: ops[s][op][1] / ms[s] / 1e9 for s in ms}})
    for layer, (channels, size) in {"max-pool 32x28x28": (32, 28), "max-pool 48x14x14": (48, 14)}.items():
        ms = {s: median_ms(pool_op(channels, size, *dt), args.iters, args.repeats) for s, dt in settings.items()}
        rows.append({"op": f"{layer} forward + backward", "ms": ms, "tflops": None})
    ref_name, vis_name = settings
    for r in rows:
        tf = f"{r['tflops'][vis_name]:15.2f}" if r["tflops"] else f"{'':15s}"
        print(f"{r['op']:34s} {r['ms'][ref_name]:13.2f} {r['ms'][vis_name]:10.2f} "
              f"{r['ms'][ref_name] / r['ms'][vis_name]:5.2f}x {tf}")
    totals = {s: sum(r["ms"][s] for r in rows) for s in settings}
    conv_vislab = sum(r["ms"][vis_name] for r in rows if r["tflops"])
    print(f"sum: reference {totals[ref_name]:.2f} ms, vislab {totals[vis_name]:.2f} ms "
          f"({totals[ref_name] / totals[vis_name]:.2f}x); vislab's convolutions alone {conv_vislab:.2f} ms")
    write_json(args.out, {"batch": N, "iters": args.iters, "repeats": args.repeats,
                          "torch_threads": torch.get_num_threads(), "rows": rows, "total_ms": totals,
                          "vislab_convolutions_ms": conv_vislab})


if __name__ == "__main__":
    main()
