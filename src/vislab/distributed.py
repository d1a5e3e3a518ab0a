"""Training under ``torchrun``: data-parallel replicas of one training, with torch.distributed.

``torchrun --nproc_per_node N -m vislab adapt|gan|transfer ...`` starts N processes (ranks) that run
the same command. :func:`init_from_env` joins them into one process group (gloo for CPU tensors,
NCCL for CUDA ones) when torchrun's ``WORLD_SIZE`` is above 1; a plain ``vislab`` command never
touches torch.distributed, so a single process trains exactly as before, bit for bit.

Inside :func:`vislab.training.fit`, a :class:`Replicas` keeps the ranks one training:

- every rank draws the same epoch order and batch from the same generators, then keeps its slice of
  the batch's rows (what ``DistributedSampler`` does for a data set, here per batch): the ranks'
  slices together are the batch a single process would train on;
- each rank's gradients are scaled by its share of the rows and summed over the ranks right after
  every backward pass, so every optimiser steps on the gradient of the global batch's mean loss;
- the per-step statistics (losses) are combined the same way, so every rank sees the same numbers
  (the non-finite check and the history agree), and a time limit pauses every rank at the same step;
- rank 0 loads the checkpoint and sends it to the others; only rank 0 writes (see :class:`vislab.runs.Run`).

This is exact (up to float rounding) for losses that average over the batch's rows. A loss that
averages over a data-dependent subset of them (``dann+pl``'s pseudo-label loss: the labelled target
rows) is averaged over each rank's subset, then weighted by the rank's share of the rows.

BatchNorm layers normalise each rank's slice with that slice's statistics, so with BatchNorm in
training mode N ranks do not train exactly what one process does (``vislab gan --sync-bn`` makes
them share the statistics, on GPUs); their running statistics are rank 0's (as with DDP's
``broadcast_buffers``).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from .errors import UserError

T = TypeVar("T")


def init_from_env() -> bool:
    """Join torchrun's process group when its environment asks for more than one process; return
    whether this process is one of several. The backend follows each tensor's device: gloo for CPU
    tensors, NCCL for CUDA ones (each rank on the GPU of its ``LOCAL_RANK``)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend)  # rank, world size and rendezvous from torchrun's variables
    return True


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes the outputs: rank 0, or the only process."""
    return rank() == 0


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` run by rank 0 only, its result sent to every rank; a :class:`UserError` it raises is
    raised on every rank (so that no rank waits for the others forever)."""
    if world_size() == 1:
        return fn()
    box: list[Any] = [None]
    failure = None
    if is_main():
        try:
            box[0] = ("ok", fn())
        except UserError as e:
            box[0], failure = ("error", str(e)), e
        except BaseException as e:
            box[0], failure = ("crash", f"{type(e).__name__} on rank 0"), e
    dist.broadcast_object_list(box, src=0)
    if failure is not None:
        raise failure
    kind, value = box[0]
    if kind == "ok":
        return value
    raise UserError(value) if kind == "error" else RuntimeError(value)


def all_sum(values: dict[str, float]) -> dict[str, float]:
    """``values`` summed over the ranks (e.g. the counts and sums behind an epoch's accuracy)."""
    if world_size() == 1:
        return values
    t = torch.tensor([float(v) for v in values.values()], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: type(v)(x) for (k, v), x in zip(values.items(), t.tolist())}


def sync_batchnorm(*nets: nn.Module, device: torch.device) -> tuple[nn.Module, ...]:
    """``nets`` with their BatchNorm layers as ``SyncBatchNorm`` (the same weights): under torchrun
    they normalise with the statistics of every rank's slice, the whole batch; alone, as before."""
    if world_size() > 1 and device.type != "cuda":
        raise UserError("--sync-bn: torch's SyncBatchNorm runs on CUDA GPUs only; leave it out on CPUs")
    return tuple(nn.SyncBatchNorm.convert_sync_batchnorm(net) for net in nets)


def modules_of(algorithm: Any) -> list[nn.Module]:
    """The networks an algorithm trains: itself if it is a module, else its module attributes."""
    if isinstance(algorithm, nn.Module):
        return [algorithm]
    return [v for v in vars(algorithm).values() if isinstance(v, nn.Module)]


class Replicas:
    """The fit loop's view of the ranks. This base class is the single process: every method is
    the identity, so :func:`vislab.training.fit` runs the same code with or without torchrun."""

    world_size, rank, is_main = 1, 0, True

    def load(self, load: Callable[[], T]) -> T:
        return load()

    @contextmanager
    def averaging_gradients(self) -> Iterator[None]:
        yield

    def local(self, batch: Any) -> Any:
        return batch

    def combine(self, stats: dict[str, float]) -> dict[str, float]:
        return stats

    def any(self, flag: bool) -> bool:
        return flag

    def sync_buffers(self) -> None:
        pass


def replicas(algorithm: Any) -> Replicas:
    """The ranks of the current process group training ``algorithm``, or the single process."""
    if world_size() == 1:
        return Replicas()
    modules = modules_of(algorithm)
    if not any(p.requires_grad for m in modules for p in m.parameters()):  # each rank would train its own
        raise TypeError(f"{type(algorithm).__name__}: no trainable parameters among its nn.Module attributes, "
                        "so the ranks' gradients cannot be combined")
    return DataParallel(modules)


class DataParallel(Replicas):
    """Several ranks training one model together (see the module docstring).

    Why not wrap the networks in ``DistributedDataParallel``: DDP averages gradients only for
    passes through its own ``forward``, while the algorithms call parts of their networks (DANN's
    ``features`` / ``classifier`` / ``domain``) and call a network several times per step (a GAN's
    D on real, on fake, then for G's loss). Averaging at the end of each backward pass, from hooks
    on the parameters, covers every algorithm without it knowing, and happens before anything reads
    the gradients (gradient clipping, norms), so those see the global batch's gradient.
    """

    def __init__(self, modules: list[nn.Module]):
        self.world_size, self.rank = dist.get_world_size(), dist.get_rank()
        self.is_main = self.rank == 0
        self.modules = modules
        params = {id(p): p for m in modules for p in m.parameters()}  # shared parameters once
        self.params = [p for p in params.values() if p.requires_grad]
        self.share = 1.0 / self.world_size  # this rank's fraction of the current batch's rows
        self._ready: list[int] = []
        # the replicas start equal, as DDP makes them (the same seed gives the same weights anyway)
        for t in [*params.values(), *self._buffers()]:
            dist.broadcast(t.data, src=0)

    def _buffers(self) -> list[torch.Tensor]:
        return list({id(b): b for m in self.modules for b in m.buffers()}.values())

    def load(self, load: Callable[[], T]) -> T:
        return on_main(load)  # the checkpoint need only be readable by rank 0

    # -- gradients -------------------------------------------------------------------------------
    @contextmanager
    def averaging_gradients(self) -> Iterator[None]:
        handles = [p.register_post_accumulate_grad_hook(functools.partial(self._grad_ready, i))
                   for i, p in enumerate(self.params)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _grad_ready(self, index: int, _param: torch.Tensor) -> None:
        if not self._ready:  # the first gradient of this backward pass: reduce them all at its end
            torch.autograd.Variable._execution_engine.queue_callback(self._reduce_grads)
        self._ready.append(index)

    def _reduce_grads(self) -> None:
        # One all-reduce per backward pass (DDP's buckets, in one): the ready gradients flattened in
        # parameter order, which every rank shares whatever order autograd produced them in.
        grads = [self.params[i].grad for i in sorted(self._ready)]
        self._ready = []
        flat = torch.cat([g.reshape(-1) for g in grads]).mul_(self.share)
        dist.all_reduce(flat)
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view(g.shape))

    # -- data and statistics ---------------------------------------------------------------------
    def local(self, batch: Any) -> Any:
        """This rank's rows of ``batch`` (tensors, and tuples / lists / dicts / dataclasses of them,
        split along the first dimension in ``world_size`` near-equal parts, as ``tensor_split``)."""
        rows = _first_len(batch)
        if rows is not None and rows < self.world_size:
            raise UserError(f"a batch of {rows} row(s) cannot be shared by {self.world_size} processes; use a "
                            f"batch size (and a training set) of at least {self.world_size} per batch")
        if rows:
            self.share = len(range(rows)[self.rank::self.world_size]) / rows
        return _slice(batch, self.rank, self.world_size)

    def combine(self, stats: dict[str, float]) -> dict[str, float]:
        """The batch's statistics: each rank's weighted by its share of the rows, summed (for means
        over the rows, the global batch's mean)."""
        t = torch.tensor([v * self.share for v in stats.values()], dtype=torch.float64)
        dist.all_reduce(t)
        return dict(zip(stats, t.tolist()))

    def any(self, flag: bool) -> bool:
        t = torch.tensor([float(flag)])
        dist.all_reduce(t)
        return bool(t.item())

    def sync_buffers(self) -> None:
        """Rank 0's buffers (BatchNorm running statistics, step counters) on every rank, before an
        evaluation or a pseudo-label round reads them."""
        for b in self._buffers():
            dist.broadcast(b.data, src=0)


def _first_len(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return len(batch)
    items = (batch.values() if isinstance(batch, dict) else
             [getattr(batch, f.name) for f in dataclasses.fields(batch)] if dataclasses.is_dataclass(batch) else
             batch if isinstance(batch, (tuple, list)) else ())
    for x in items:
        n = _first_len(x)
        if n is not None:
            return n
    return None


def _slice(batch: Any, rank: int, world: int) -> Any:
    # rank r keeps rows r, r + world, ... (DistributedSampler's choice, within the batch): a view,
    # and the sizes of tensor_split's near-equal parts
    if isinstance(batch, torch.Tensor):
        return batch[rank::world]
    if isinstance(batch, dict):
        return {k: _slice(v, rank, world) for k, v in batch.items()}
    if dataclasses.is_dataclass(batch):
        return dataclasses.replace(batch, **{f.name: _slice(getattr(batch, f.name), rank, world)
                                             for f in dataclasses.fields(batch)})
    if isinstance(batch, (tuple, list)):
        parts = [_slice(x, rank, world) for x in batch]
        return type(batch)(*parts) if hasattr(batch, "_fields") else type(batch)(parts)  # a NamedTuple too
    return batch
