"""The one fit loop: history, exact resume after a pause, refused resumes, non-finite losses."""
from __future__ import annotations

import pytest
import torch

from vislab.errors import UserError
from vislab.training import Checkpoint, Paused, Plan, fit


class LeastSquares:
    """A tiny algorithm: SGD on a linear model; stats are the batch loss and the step count."""

    def __init__(self, lr: float = 0.1):
        torch.manual_seed(0)
        self.w = torch.zeros(3, requires_grad=True)
        self.opt = torch.optim.SGD([self.w], lr=lr, momentum=0.9)
        self.step = 0

    def update(self, batch):
        x, y = batch
        loss = ((x @ self.w - y) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.step += 1
        return {"loss": loss.item(), "step": float(self.step)}

    def state(self):
        return {"w": self.w.detach().clone(), "opt": self.opt.state_dict(), "step": self.step}

    def load_state(self, state):
        with torch.no_grad():
            self.w.copy_(state["w"])
        self.opt.load_state_dict(state["opt"])
        self.step = state["step"]


class Data:
    """32 points of y = x . (1, -2, 0.5), shuffled each epoch; batches of 8 plus noise from the rng."""

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(32, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5])

    def order(self, rngs):
        return torch.randperm(32, generator=rngs["order"])

    def batch(self, order, i, rngs):
        idx = order[i * 8:(i + 1) * 8]
        return self.x[idx], self.y[idx] + 0.01 * torch.randn(8, generator=rngs["noise"])


def rngs(seed: int = 0):
    return {"order": torch.Generator().manual_seed(seed), "noise": torch.Generator().manual_seed(seed + 1)}


def test_fit_learns_and_records_one_row_per_epoch():
    algo = LeastSquares()
    res = fit(algo, Data(), Plan(epochs=20, steps_per_epoch=4), rngs=rngs())
    assert [r["epoch"] for r in res.history] == list(range(1, 21))
    assert res.steps == 80 and algo.step == 80
    # the mean of update()'s "step" stat over epoch 1 is (1 + 2 + 3 + 4) / 4
    assert res.history[0]["step"] == pytest.approx(2.5)
    assert res.history[-1]["loss"] < 0.05 * res.history[0]["loss"]
    assert torch.allclose(algo.w.detach(), torch.tensor([1.0, -2.0, 0.5]), atol=0.05)


def test_hooks_are_called_per_epoch_and_per_step():
    seen_epochs, seen_steps = [], []
    res = fit(LeastSquares(), Data(), Plan(3, 4), rngs=rngs(),
              before_epoch=seen_epochs.append, on_step=lambda s, stats: seen_steps.append(s),
              evaluate=lambda e, means, secs: {"eval_epoch": e, "mean_loss": means["loss"], "t": secs})
    assert seen_epochs == [0, 1, 2]
    assert seen_steps == list(range(1, 13))
    assert [r["eval_epoch"] for r in res.history] == [0, 1, 2]
    assert all(set(r) == {"epoch", "eval_epoch", "mean_loss", "t", "seconds"} for r in res.history)


def test_pause_and_resume_mid_epoch_is_bit_for_bit(tmp_path):
    plan = Plan(epochs=3, steps_per_epoch=4)
    full = LeastSquares()
    ref = fit(full, Data(), plan, rngs=rngs())

    ckpt = Checkpoint(tmp_path / "checkpoint.pt", {"lr": 0.1})
    with pytest.raises(Paused, match="--resume"):
        fit(LeastSquares(), Data(), plan, rngs=rngs(), checkpoint=ckpt, stop_after_steps=6)  # mid epoch 2
    resumed = LeastSquares()
    res = fit(resumed, Data(), plan, rngs=rngs(), checkpoint=ckpt, resume=True)
    assert res.resumed_from == 6 and res.steps == 12
    assert torch.equal(resumed.w, full.w)
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds")} for r in ref.history]
    assert [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds")} for r in res.history] == strip


def test_resume_with_other_options_is_refused_naming_the_option(tmp_path):
    path = tmp_path / "run.partial" / "checkpoint.pt"
    path.parent.mkdir()
    with pytest.raises(Paused):
        fit(LeastSquares(), Data(), Plan(2, 4), rngs=rngs(), checkpoint=Checkpoint(path, {"lr": 0.1, "epochs": 2}),
            stop_after_steps=2)
    with pytest.raises(UserError, match=r"--lr 0\.1.*0\.5.*--overwrite"):
        fit(LeastSquares(), Data(), Plan(2, 4), rngs=rngs(), checkpoint=Checkpoint(path, {"lr": 0.5, "epochs": 2}),
            resume=True)


def test_truncated_checkpoint_says_to_start_over(tmp_path):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(Paused):
        fit(LeastSquares(), Data(), Plan(2, 4), rngs=rngs(), checkpoint=Checkpoint(path, {}), stop_after_steps=1)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="truncated or corrupt.*--overwrite"):
        fit(LeastSquares(), Data(), Plan(2, 4), rngs=rngs(), checkpoint=Checkpoint(path, {}), resume=True)


def test_non_finite_loss_stops_with_the_step():
    with pytest.raises(UserError, match=r"diverged \(loss = (nan|inf)\) at epoch \d+, step \d"):
        fit(LeastSquares(lr=1e6), Data(), Plan(5, 4), rngs=rngs())


def test_an_empty_plan_is_a_user_error():
    with pytest.raises(UserError, match="nothing to train"):
        Plan(epochs=0, steps_per_epoch=4)
    with pytest.raises(UserError, match="batch size"):
        Plan(epochs=2, steps_per_epoch=0)
