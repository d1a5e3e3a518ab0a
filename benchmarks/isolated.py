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
from typing import Any


@dataclass
class Loop:
    """``build(*args)`` runs in the loop's own process and returns the step function (no arguments;
    what it returns must pickle: the last step's value comes back for checks). ``vislab_allocator``:
    set :func:`vislab.allocator.retain_freed_memory` there first, as the ``vislab`` command does.
    ``build`` and ``args`` must pickle (a module-level function)."""

    build: Callable[..., Callable[[], Any]]
    args: tuple = ()
    vislab_allocator: bool = True
    threads: int | None = None


@dataclass
class Timing:
    rates: list[float] = field(default_factory=list)  # steps per second, one per timed block
    last: Any = None  # what the last step returned
    torch_threads: int = 0


def _serve(conn, loop: Loop) -> None:
    # a spawned process inherits "spawn" as its default start method; give the loop the platform's
    # default, as in a script started from the shell (else every DataLoader pass spawns fresh workers)
    multiprocessing.set_start_method(None, force=True)
    import torch

    from vislab.allocator import retain_freed_memory

    if loop.vislab_allocator and not retain_freed_memory():
        conn.send(None)  # the policy is not in force here: say so rather than time something else
        return
    if loop.threads:
        torch.set_num_threads(loop.threads)
    step = loop.build(*loop.args)
    conn.send(torch.get_num_threads())
    while (steps := conn.recv()) is not None:
        out = None
        t0 = time.perf_counter()
        for _ in range(steps):
            out = step()
        conn.send((time.perf_counter() - t0, out))


def time_loops(loops: dict[str, Loop], steps: int, repeats: int, warmup: int,
               report: Callable[[str], None] = print) -> dict[str, Timing]:
    """Each loop's steps per second over ``repeats`` blocks of ``steps`` steps, after ``warmup``
    untimed steps (allocator, oneDNN primitives, data loader start)."""
    ctx = multiprocessing.get_context("spawn")
    servers: dict[str, tuple] = {}
    timings = {name: Timing() for name in loops}
    try:
        for name, loop in loops.items():
            parent, child = ctx.Pipe()
            # not a daemon: a loop may start DataLoader worker processes of its own
            proc = ctx.Process(target=_serve, args=(child, loop))
            proc.start()
            servers[name] = (parent, proc)
            threads = parent.recv()
            if threads is None:
                raise SystemExit(f"{name}: vislab's allocator policy could not be set (it needs glibc, and "
                                 "VISLAB_SYSTEM_MALLOC unset)")
            timings[name].torch_threads = threads
            parent.send(warmup)
            parent.recv()
        for r, name in itertools.product(range(repeats), loops):
            conn = servers[name][0]
            conn.send(steps)
            seconds, timings[name].last = conn.recv()
            timings[name].rates.append(steps / seconds)
            report(f"block {r + 1}/{repeats} {name}: {timings[name].rates[-1]:.2f} steps/s")
        return timings
    finally:
        for conn, proc in servers.values():
            if proc.is_alive():
                conn.send(None)
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
