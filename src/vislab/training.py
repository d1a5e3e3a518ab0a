"""The one training loop of vislab, and its checkpoint.

Every training (DANN modes, GAN / cGAN, linear head, fine-tuning, the MNIST classifier behind the
GAN metrics) runs through :func:`fit`. The loop owns what every training needs the same way: the
progress bar, timing, the random generators of data order and noise, the non-finite-loss check,
pausing on a time or step limit, and an atomic checkpoint that records the options a ``--resume``
must share. The step itself is the algorithm's ``update(batch)``, the data comes from the
experiment's :class:`EpochData`, the evaluation from its ``evaluate`` hook, so the loop never knows
which algorithm it runs. Under ``torchrun`` the same loop trains one model on several processes
(:mod:`vislab.distributed`: each rank's slice of every batch, gradients and statistics combined).

A checkpoint is written at every epoch end and when a limit pauses the run mid-epoch; it holds the
epoch's drawn order and the generators' states, so a resumed run continues bit for bit.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch

from . import distributed
from .config import check_same_options
from .errors import UserError
from .io import load_checkpoint, torch_save
from .progress import progress


class Trainable(Protocol):
    """What every algorithm exposes (DomainBed's contract)."""

    def update(self, batch: Any) -> dict[str, float]: ...  # one optimisation step -> plain floats
    def state(self) -> dict: ...  # everything needed to resume: networks, optimisers, step counter
    def load_state(self, state: dict) -> None: ...


class EpochData(Protocol):
    """The experiment's data: an order drawn once per epoch, then batches by index."""

    def order(self, rngs: dict[str, torch.Generator]) -> Any:
        """Draw this epoch's order (e.g. permutations) from ``rngs``: tensors, or a tuple/dict of them."""

    def batch(self, order: Any, i: int, rngs: dict[str, torch.Generator]) -> Any:
        """The ``i``-th batch of the epoch; may draw more randomness (noise, augmentation) from ``rngs``."""


@dataclasses.dataclass(frozen=True)
class Plan:
    epochs: int
    steps_per_epoch: int

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.steps_per_epoch < 1:
            raise UserError(f"nothing to train: {self.epochs} epoch(s) of {self.steps_per_epoch} step(s); "
                            "give at least one epoch and a batch size no larger than the training set")


@dataclasses.dataclass
class FitResult:
    history: list[dict]  # one row per epoch (see fit)
    steps: int  # update() calls in total, over every session of a resumed run
    train_seconds: float  # time spent in batch() + update(), over every session
    resumed_from: int = 0  # global step the run was resumed at (0: a fresh run)


class Paused(Exception):
    """Training stopped on purpose at a time or step limit; its checkpoint is kept for ``--resume``.
    Not an error: the CLI prints the message and exits with :attr:`exit_code`."""

    exit_code = 3


class Checkpoint:
    """An atomic checkpoint file that refuses to be resumed with other options.

    ``identity`` is :func:`vislab.config.resume_identity` of the run's config (or any dict of the
    values that decide the result); :meth:`load` compares it with the saved one.
    """

    def __init__(self, path: str | Path, identity: dict[str, Any]):
        self.path, self.identity = Path(path), identity

    def load(self) -> dict | None:
        if not self.path.is_file():
            return None
        payload = load_checkpoint(self.path)
        check_same_options(payload.get("identity", {}), self.identity, str(self.path.parent))
        return payload

    def save(self, payload: dict) -> None:
        torch_save({"identity": self.identity, **payload}, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def fit(algorithm: Trainable, data: EpochData, plan: Plan, *,
        rngs: dict[str, torch.Generator],
        checkpoint: Checkpoint | None = None,
        resume: bool = False,
        before_epoch: Callable[[int], None] | None = None,
        evaluate: Callable[[int, dict[str, float], float], dict] | None = None,
        extras: dict[str, Any] | None = None,
        on_step: Callable[[int, dict[str, float]], None] | None = None,
        finite: Sequence[str] = ("loss",),
        max_minutes: float = 0.0, stop_after_steps: int = 0,
        desc: str = "training") -> FitResult:
    """Train ``algorithm`` for ``plan`` and return the per-epoch history.

    Per epoch ``e`` (0-based): ``before_epoch(e)`` (e.g. a pseudo-label round), ``data.order(rngs)``,
    then ``steps_per_epoch`` times ``algorithm.update(data.batch(order, i, rngs))`` and
    ``on_step(global_step, stats)``. The history row of the epoch is ``{"epoch": e + 1, **row,
    "seconds": ...}`` where ``row = evaluate(e, mean_stats, train_seconds)`` (the epoch's mean of each
    ``update`` stat and the seconds spent in batches and updates), or the mean stats with
    ``train_seconds`` when ``evaluate`` is None.

    ``finite``: stats whose names start with one of these must stay finite (a UserError names the
    step otherwise). ``extras``: other objects with ``state()`` / ``load_state()`` to checkpoint.
    ``max_minutes`` / ``stop_after_steps`` (0 = none): write the checkpoint and raise :class:`Paused`.

    Under torchrun (:func:`vislab.distributed.init_from_env`) every rank calls ``fit`` alike: each
    trains on its slice of every batch, the stats passed to ``on_step`` / ``evaluate`` are the global
    batch's, every hook runs on every rank, and only rank 0 writes the checkpoint (and reads it).
    """
    extras = extras or {}
    ranks = distributed.replicas(algorithm)  # the single process, or this rank of several (torchrun)
    state = _resumed(checkpoint if resume else None, ranks, algorithm, rngs, extras, plan, desc)
    checkpoint = checkpoint if ranks.is_main else None  # rank 0 writes, the others follow it
    resumed_from = state.steps
    t_session = time.perf_counter()
    total = plan.epochs * plan.steps_per_epoch
    with progress(total=total, initial=state.steps, desc=desc, unit="step") as bar, ranks.averaging_gradients():
        while state.epoch < plan.epochs:
            t_epoch = time.perf_counter()
            if state.step_in_epoch == 0:
                ranks.sync_buffers()
                if before_epoch is not None:
                    before_epoch(state.epoch)
                state.order, state.sums, state.epoch_train_seconds = data.order(rngs), {}, 0.0
            while state.step_in_epoch < plan.steps_per_epoch:
                t0 = time.perf_counter()
                stats = ranks.combine(algorithm.update(ranks.local(data.batch(state.order, state.step_in_epoch,
                                                                              rngs))))
                dt = time.perf_counter() - t0
                state.advance(stats, dt)
                _check_finite(stats, finite, state, desc)
                bar.update(1)
                if on_step is not None:
                    on_step(state.steps, stats)
                if (max_minutes or stop_after_steps) and ranks.any(
                        _limit_reached(state, t_session, max_minutes, stop_after_steps, plan)):
                    _save(checkpoint, state, algorithm, rngs, extras)
                    raise Paused(f"{desc}: stopped after {state.steps} steps as asked; continue with the same "
                                 f"command and --resume" + (f" (checkpoint: {checkpoint.path})" if checkpoint else ""))
            ranks.sync_buffers()  # the evaluation and the checkpoint see rank 0's BatchNorm statistics
            _end_epoch(state, plan, evaluate, t_epoch)
            _save(checkpoint, state, algorithm, rngs, extras)
    return FitResult(state.history, state.steps, state.train_seconds, resumed_from)


# -- internals ----------------------------------------------------------------------------------
@dataclasses.dataclass
class _LoopState:
    epoch: int = 0
    step_in_epoch: int = 0
    steps: int = 0
    order: Any = None
    sums: dict = dataclasses.field(default_factory=dict)
    history: list = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0
    epoch_train_seconds: float = 0.0

    def advance(self, stats: dict[str, float], seconds: float) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.step_in_epoch += 1
        self.steps += 1
        self.train_seconds += seconds
        self.epoch_train_seconds += seconds


def _resumed(checkpoint: Checkpoint | None, ranks: Any, algorithm: Trainable, rngs: dict[str, torch.Generator],
             extras: dict[str, Any], plan: Plan, desc: str) -> _LoopState:
    """The loop state to start from: the checkpoint's (rank 0 reads it, every rank restores it) or a fresh one."""
    saved = ranks.load(checkpoint.load) if checkpoint is not None else None
    if saved is None:
        return _LoopState()
    state = _restore(saved, algorithm, rngs, extras)
    if ranks.is_main:
        print(f"{desc}: " + (f"resuming at epoch {state.epoch + 1}/{plan.epochs}, step {state.step_in_epoch}"
                             if state.epoch < plan.epochs else "already trained; using the checkpoint"),
              file=sys.stderr)
    return state


def _end_epoch(state: _LoopState, plan: Plan, evaluate: Callable[[int, dict[str, float], float], dict] | None,
               t_epoch: float) -> None:
    """Append the epoch's history row (the mean stats, or what ``evaluate`` makes of them) and move on."""
    means = {k: v / plan.steps_per_epoch for k, v in state.sums.items()}
    row = (evaluate(state.epoch, means, state.epoch_train_seconds) if evaluate is not None
           else {**means, "train_seconds": state.epoch_train_seconds})
    state.history.append({"epoch": state.epoch + 1, **row, "seconds": round(time.perf_counter() - t_epoch, 2)})
    state.epoch, state.step_in_epoch, state.order = state.epoch + 1, 0, None


def _check_finite(stats: dict[str, float], finite: Sequence[str], state: _LoopState, desc: str) -> None:
    for k, v in stats.items():
        if k.startswith(tuple(finite)) and not math.isfinite(v):
            raise UserError(f"{desc}: diverged ({k} = {v}) at epoch {state.epoch + 1}, step "
                            f"{state.step_in_epoch}; lower the learning rate (or use a gentler schedule) and rerun")


def _limit_reached(state: _LoopState, t_session: float, max_minutes: float, stop_after_steps: int,
                   plan: Plan) -> bool:
    if state.steps >= plan.epochs * plan.steps_per_epoch:  # finished: nothing to pause
        return False
    return bool((stop_after_steps and state.steps >= stop_after_steps)
                or (max_minutes and time.perf_counter() - t_session >= 60 * max_minutes))


def _save(checkpoint: Checkpoint | None, state: _LoopState, algorithm: Trainable,
          rngs: dict[str, torch.Generator], extras: dict[str, Any]) -> None:
    if checkpoint is None:
        return
    loop = dataclasses.asdict(state)
    checkpoint.save({"algorithm": algorithm.state(), "rngs": {k: g.get_state() for k, g in rngs.items()},
                     "extras": {k: x.state() for k, x in extras.items()}, "loop": loop})


def _restore(saved: dict, algorithm: Trainable, rngs: dict[str, torch.Generator],
             extras: dict[str, Any]) -> _LoopState:
    algorithm.load_state(saved["algorithm"])
    for k, g in rngs.items():
        g.set_state(saved["rngs"][k])
    for k, x in extras.items():
        x.load_state(saved["extras"][k])
    return _LoopState(**saved["loop"])
