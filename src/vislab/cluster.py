"""Running vislab's work on a Ray cluster: joining it, the resources of a task, shared storage.

Ray is optional (``pip install 'vislab[ray]'``) and imported only here, when ``--executor ray``
asks for it. With no address (``--address`` or ``$RAY_ADDRESS``) :func:`ray_session` starts
Ray's local cluster sized to this machine; with one, it joins the user's cluster (started by
``ray start``, Slurm or KubeRay). Work goes to the workers as ordinary Ray tasks, so files the
tasks read or write (the study folder, the data) must be on storage every node sees:
:func:`check_shared_storage` checks it before anything runs.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import UserError

INSTALL_HINT = "pip install 'vislab[ray]'"


def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise UserError(f"--executor ray needs Ray, which is not installed ({e}); install it with "
                        f"{INSTALL_HINT}, or use --executor local") from e
    return ray


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray, connected: to ``address`` (else ``$RAY_ADDRESS``, else a new local cluster). A session
    this opened is closed at the end; one already open (a test's, a notebook's) is used as it is."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    problem = address and unreachable(address)
    if problem:  # Ray itself would retry for minutes
        raise UserError(f"--address {address}: cannot reach the Ray cluster ({problem}); check the address "
                        "(the head's `ray start --head` prints it) or leave --address and $RAY_ADDRESS unset for "
                        "a local cluster")
    local = {} if address else {"include_dashboard": False}  # joining: the cluster's own settings
    try:  # the runs' own output goes to the study log; Ray's copy of it on our stderr would repeat it
        ray.init(address=address, log_to_driver=False, **local)
    except (ConnectionError, RuntimeError, ValueError) as e:
        if not address:
            raise UserError(f"--executor ray: cannot start a local Ray cluster ({e}); see `ray start --head` "
                            "for why, or use --executor local") from e
        raise UserError(f"--address {address}: cannot join the Ray cluster ({e}); start one with "
                        "`ray start --head` or leave --address and $RAY_ADDRESS unset for a local one") from e
    print(f"ray: {_describe(ray.cluster_resources())}" + (f" at {address}" if address else " (local cluster)"),
          file=sys.stderr)
    try:
        yield ray
    finally:
        ray.shutdown()


def unreachable(address: str, timeout: float = 10.0) -> str | None:
    """Why nothing answers at a ``host:port`` or ``ray://host:port`` address, or None (reachable,
    or another form that Ray resolves itself, such as ``auto``)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def _describe(resources: dict[str, float]) -> str:
    gpus = int(resources.get("GPU", 0))
    return f"{int(resources.get('CPU', 0))} CPUs" + (f", {gpus} GPUs" if gpus else "")


def task_options(ray: Any, cpus: int, device: str = "auto") -> dict[str, Any]:
    """Ray resources of one task: a GPU when the cluster has some and ``device`` allows CUDA, and
    ``cpus`` CPUs; the worker's environment carries ``$VISLAB_CACHE`` (vislab's caches)."""
    largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
    if cpus > largest:  # Ray would wait forever for a node that can take the task
        raise UserError(f"--cpus-per-task {cpus}: no node of the Ray cluster has that many CPUs (largest: "
                        f"{largest:g}); give --cpus-per-task {int(largest)} or fewer")
    options: dict[str, Any] = {"num_cpus": cpus}
    if device != "cpu" and ray.cluster_resources().get("GPU", 0) > 0:
        options["num_gpus"] = 1
    if os.environ.get("VISLAB_CACHE"):
        options["runtime_env"] = {"env_vars": {"VISLAB_CACHE": os.environ["VISLAB_CACHE"]}}
    return options


def use_threads(threads: int) -> None:
    """In a task: torch's CPU threads = the CPUs the task asked for. A Ray worker serves many tasks
    and torch reads $OMP_NUM_THREADS only once, so a reused worker would keep its first task's count."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# --- shared storage ---------------------------------------------------------------------------

def _probe(marker: str | None, token: str, inputs: Sequence[str]) -> dict[str, Any]:
    """On one node: does it read the marker the driver wrote (if any), and see every input path?"""
    try:
        seen = marker is None or Path(marker).read_text() == token
    except OSError:
        seen = False
    return {"node": socket.gethostname(), "marker": seen, "missing": [p for p in inputs if not os.path.exists(p)]}


def storage_problems(reports: Sequence[dict[str, Any]], folder: Path | None, option: str) -> str | None:
    """One line saying which node does not see what, or None when every node sees everything."""
    problems = []
    for r in reports:
        unseen = ([f"{folder} ({option})"] if folder is not None and not r["marker"] else []) + list(r["missing"])
        if unseen:
            problems.append(f"node {r['node']} cannot see {', '.join(unseen)}")
    if not problems:
        return None
    return ("; ".join(problems) + ": every Ray node must see the same files -- put them on shared storage "
            "(NFS, a parallel file system) mounted at the same path on every node")


def check_shared_storage(ray: Any, folder: Path | None, inputs: Sequence[str] = (), option: str = "--out") -> None:
    """Check that every alive node of the cluster that runs tasks reads a marker written into ``folder`` (when given)
    and sees every path of ``inputs``; a :class:`UserError` naming the node and the path otherwise."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    marker = (folder / f".vislab-shared-{token}") if folder is not None else None
    if marker is not None:
        marker.write_text(token)
    try:
        probe = ray.remote(num_cpus=0)(_probe)
        # the nodes that run tasks (a head started with --num-cpus 0 runs none)
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
        reports = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                           .remote(marker and str(marker), token, [str(p) for p in inputs]) for node in nodes])
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)
    problem = storage_problems(reports, folder, option)
    if problem:
        raise UserError(problem)
