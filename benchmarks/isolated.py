"""Time training loops side by side, each in its own process, taking turns block by block.

Why separate processes: PyTorch's CPU tensors come straight from glibc malloc, whose thresholds
depend on everything the process allocated before (see ``vislab.allocator``). In one shared
process the loop timed second inherits the first one's heap: the DANN reference loop page-faulted
about 12,000 times per step next to the vislab loops and ran 19-22 steps/s, against 30 steps/s in a
process of its own. Spawned (not forked) processes start from a clean heap, and the turns spread
drifting CPU load over all loops alike.
"""
from __future__ import annotations

import itertools
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Loop:
    """``build(*args)`` runs in the loop's own process and returns the step function (no arguments).
    ``vislab_allocator``: set :func:`vislab.allocator.retain_freed_memory` there first, as the
    ``vislab`` command does. ``build`` and ``args`` must pickle (a module-level function)."""

    build: Callable[..., Callable[[], None]]
    args: tuple = ()
    vislab_allocator: bool = True
    threads: int | None = None
    info: dict = field(default_factory=dict)


def _serve(conn, loop: Loop) -> None:
    import torch

    from vislab.allocator import retain_freed_memory

    if loop.vislab_allocator and not retain_freed_memory():
        conn.send(None)  # the policy cannot be set here (no glibc): say so rather than time something else
        return
    if loop.threads:
        torch.set_num_threads(loop.threads)
    step = loop.build(*loop.args)
    conn.send(torch.get_num_threads())
    while (steps := conn.recv()) is not None:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        conn.send(time.perf_counter() - t0)


def time_loops(loops: dict[str, Loop], steps: int, repeats: int, warmup: int,
               report: Callable[[str], None] = print) -> dict[str, list[float]]:
    """Steps per second of each loop: ``repeats`` blocks of ``steps`` steps after ``warmup`` steps."""
    ctx = multiprocessing.get_context("spawn")
    servers: dict[str, tuple] = {}
    try:
        for name, loop in loops.items():
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child, loop), daemon=True)
            proc.start()
            servers[name] = (parent, proc)
            threads = parent.recv()
            if threads is None:
                raise SystemExit(f"{name}: vislab's allocator policy needs glibc (Linux)")
            loop.info["torch_threads"] = threads
            parent.send(warmup)  # allocator, oneDNN primitives, data loader start
            parent.recv()
        rates: dict[str, list[float]] = {name: [] for name in loops}
        for r, name in itertools.product(range(repeats), loops):
            conn = servers[name][0]
            conn.send(steps)
            rates[name].append(steps / conn.recv())
            report(f"block {r + 1}/{repeats} {name}: {rates[name][-1]:.1f} steps/s")
        return rates
    finally:
        for conn, proc in servers.values():
            if proc.is_alive():
                conn.send(None)
            proc.join(timeout=30)
