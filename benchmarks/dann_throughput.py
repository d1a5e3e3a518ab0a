"""DANN training throughput: vislab's loop vs the straightforward reference loop, in the same run.

reference: two torchvision-style DataLoaders (MNIST as PIL "L", MNIST-M as PIL "RGB") with
per-sample ToTensor + Normalize (+ grey -> 3 channels), zipped, batch 64 + 64, the SPEC network
(Conv-ReLU-MaxPool) in fp32, GRL + SGD momentum 0.9.
vislab: the datasets as in-memory uint8 tensors, batches sliced and normalised on the fly
(``vislab.data.domains.DomainBatches``, what ``vislab.training.fit`` draws in ``vislab adapt``),
``vislab.methods.dann.DANN.update`` (MaxPool-then-ReLU, bf16 autocast where the CPU runs it natively,
channels_last by default),
in a process where ``vislab.allocator.retain_freed_memory`` is in force, as in the ``vislab``
command. Intermediate rows switch the vislab options off one at a time to show what each
contributes, and the reference is also timed with vislab's allocator policy, so that the table
shows how much of the gain the allocator alone gives; the last row adds what the default
``vislab`` preset does on top of the plain DANN step (gradient-norm clipping and the EMA of the
weights): the loop ``vislab adapt --mode dann`` actually runs.

Each row runs in its own spawned process (``isolated.py``: no loop inherits another's heap, which
had let the reference page-fault ~12,000 times per step), ``--repeats`` timed blocks of ``--steps``
steps after a warm-up block, the processes taking turns block by block so that drifting CPU load
hits them alike; the table gives medians.

    flock /tmp/vislab-cpu.lock .venv/bin/python benchmarks/dann_throughput.py \
        --data-root ../shared/data/mnist --backgrounds ../shared/data/bsds500/train
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from isolated import Loop, time_loops
from vislab.data.mnist import MNIST_MEAN, MNIST_STD, DigitSet, load_mnist
from vislab.data.mnistm import load_mnistm
from vislab.data.domains import DomainBatches, Domains
from vislab.experiments.adapt import AdaptConfig, hparams
from vislab.io import write_json
from vislab.methods.dann import DANN, AdaptHParams
from vislab.methods.grl import grad_reverse
from vislab.models.dann import DANNNet, FEATURE_DIM
from vislab.precision import bf16_is_native


class PILDigits(Dataset):
    """What torchvision's MNIST dataset does per item: uint8 array -> PIL image -> transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images.numpy(), labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        img = self.images[i]
        pil = Image.fromarray(img, mode="L") if img.ndim == 2 else Image.fromarray(img.transpose(1, 2, 0), mode="RGB")
        return self.transform(pil), int(self.labels[i])


class ReferenceNet(nn.Module):
    """The SPEC network written the straightforward way (ReLU before MaxPool)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(32, 48, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(FEATURE_DIM, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                                        nn.Linear(100, 10))
        self.domain = nn.Sequential(nn.Linear(FEATURE_DIM, 100), nn.ReLU(), nn.Linear(100, 1), nn.Flatten(0))


def reference_loop(src: DigitSet, tgt: DigitSet, bs: int):
    norm = transforms.Normalize((MNIST_MEAN,) * 3, (MNIST_STD,) * 3)
    grey = transforms.Compose([transforms.ToTensor(), transforms.Lambda(lambda x: x.repeat(3, 1, 1)), norm])
    rgb = transforms.Compose([transforms.ToTensor(), norm])
    ls = DataLoader(PILDigits(src.images, src.labels, grey), batch_size=bs, shuffle=True, drop_last=True)
    lt = DataLoader(PILDigits(tgt.images, tgt.labels, rgb), batch_size=bs, shuffle=True, drop_last=True)
    torch.manual_seed(0)
    net = ReferenceNet()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    dlabels = torch.cat([torch.ones(bs), torch.zeros(bs)])

    def batches():
        while True:
            yield from zip(ls, lt)

    it = batches()

    def step():
        (xs, ys), (xt, _) = next(it)
        f = net.features(torch.cat([xs, xt]))
        loss = F.cross_entropy(net.classifier(f[:bs]), ys) + \
            F.binary_cross_entropy_with_logits(net.domain(grad_reverse(f, 0.5)), dlabels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def vislab_loop(src: DigitSet, tgt: DigitSet, bs: int, net: nn.Module | None = None, **hp):
    """One step of what ``vislab.training.fit`` runs for ``vislab adapt --mode dann``: the next batch of
    the epoch's order from :class:`DomainBatches`, then ``DANN.update``."""
    torch.manual_seed(0)
    algo = DANN(net or DANNNet(), AdaptHParams(**hp), total_steps=10**9)
    norm = (MNIST_MEAN, MNIST_STD)
    data = DomainBatches(Domains(src, src, tgt, tgt), {"source": norm, "target": norm}, bs)
    rngs = {"order": torch.Generator().manual_seed(0)}
    state = {"i": 0, "order": None}

    def step():
        i = state["i"] % data.steps_per_epoch
        if i == 0:
            state["order"] = data.order(rngs)
        algo.update(data.batch(state["order"], i, rngs))
        state["i"] += 1
    return step


def load_domains(data_root: str | None, backgrounds: str | None) -> tuple[DigitSet, DigitSet]:
    if data_root:
        src = load_mnist("train", data_root)
    else:
        g = torch.Generator().manual_seed(0)
        src = DigitSet(torch.randint(0, 256, (60000, 28, 28), generator=g, dtype=torch.uint8),
                       torch.randint(0, 10, (60000,), generator=g))
    return src, load_mnistm("train", data_root, backgrounds, digits=src, allow_download=False)


def build_loop(kind: str, data_root: str | None, backgrounds: str | None, bs: int):
    """The step function of one row, built in that row's own process (see isolated.py)."""
    src, tgt = load_domains(data_root, backgrounds)
    if kind == "reference":
        return reference_loop(src, tgt, bs)
    if kind == "fp32":
        return vislab_loop(src, tgt, bs, precision="fp32", channels_last=False)
    if kind == "low":
        return vislab_loop(src, tgt, bs, precision="auto", channels_last=False)
    if kind == "relu_first":
        return vislab_loop(src, tgt, bs, net=ReferenceNet())
    if kind == "adapt":  # the hyperparameters of `vislab adapt` with its defaults
        return vislab_loop(src, tgt, bs, **dataclasses.asdict(hparams(AdaptConfig())))
    return vislab_loop(src, tgt, bs)


# vislab's loops run in its `auto` precision: bf16 autocast where the CPU runs it natively. Elsewhere
# bf16 is emulated (0.8 steps/s measured on a CPU without AVX512-BF16), which no vislab command does,
# so those rows time fp32 and the separate fp32 row is left out.
LOW = "bf16" if bf16_is_native(torch.device("cpu")) else "fp32"

# row -> (loop, vislab's allocator policy); the first row is the reference of the ratios
ROWS: dict[str, tuple[str, bool]] = {
    "reference (DataLoaders, PIL ToTensor/Normalize, fp32)": ("reference", False),
    "reference with vislab's allocator policy": ("reference", True),
    **({"vislab in-memory, fp32": ("fp32", True)} if LOW == "bf16" else {}),
    f"vislab in-memory, {LOW}": ("low", True),
    f"vislab in-memory, {LOW} + channels_last, ReLU before pool": ("relu_first", True),
    f"vislab in-memory, {LOW} + channels_last, glibc's allocator defaults": ("default", False),
    f"vislab in-memory, {LOW} + channels_last": ("default", True),
    "vislab adapt default (+ clipping + EMA of weights)": ("adapt", True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", help="MNIST IDX folder (default: synthetic random digits, 60,000)")
    ap.add_argument("--backgrounds", help="MNIST-M background photos folder (default: bundled photos)")
    ap.add_argument("--batch-size", type=int, default=64, help="images per domain per step (default 64)")
    ap.add_argument("--steps", type=int, default=100, help="steps per timed block (default 100)")
    ap.add_argument("--repeats", type=int, default=5, help="timed blocks per loop; medians reported (default 5)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default="benchmarks/results/dann_throughput.json",
                    help="JSON file to write (default benchmarks/results/dann_throughput.json)")
    args = ap.parse_args()
    src, tgt = load_domains(args.data_root, args.backgrounds)  # builds the MNIST-M cache once, here
    steps_per_epoch = min(len(src), len(tgt)) // args.batch_size
    del src

    loops = {name: Loop(build_loop, (kind, args.data_root, args.backgrounds, args.batch_size), retain, args.threads)
             for name, (kind, retain) in ROWS.items()}
    timings = time_loops(loops, args.steps, args.repeats, warmup=max(10, args.steps // 5),
                         report=lambda line: print(line, file=sys.stderr))
    rates = {name: t.rates for name, t in timings.items()}

    ref = statistics.median(rates[next(iter(ROWS))])
    ref_retain = statistics.median(rates["reference with vislab's allocator policy"])
    rows = []
    print(f"{'loop':66s} {'steps/s (median)':>17s} {'min':>7s} {'max':>7s} {'vs reference':>13s}")
    for name, r in rates.items():
        med = statistics.median(r)
        rows.append({"loop": name, "vislab_allocator_policy": ROWS[name][1], "steps_per_s_median": med,
                     "min": min(r), "max": max(r), "speedup": med / ref, "all": r})
        print(f"{name:66s} {med:17.1f} {min(r):7.1f} {max(r):7.1f} {med / ref:12.2f}x")
    default = rows[-1]
    print(f"vislab adapt's loop against the reference with the same allocator policy: "
          f"{default['steps_per_s_median'] / ref_retain:.2f}x")
    steps_20 = 20 * steps_per_epoch
    print(f"20 epochs = {steps_20} steps: reference {steps_20 / ref / 60:.1f} min, vislab "
          f"{steps_20 / default['steps_per_s_median'] / 60:.1f} min of training steps (evaluation not included)")
    write_json(args.out, {"batch_size": args.batch_size, "steps_per_block": args.steps, "repeats": args.repeats,
                          "torch_threads": timings[next(iter(ROWS))].torch_threads,
                          "process_per_loop": True, "vislab_precision": LOW, "data_root": args.data_root,
                          "backgrounds": tgt.backgrounds, "rows": rows, "speedup_default": default["speedup"],
                          "speedup_default_same_allocator": default["steps_per_s_median"] / ref_retain})


if __name__ == "__main__":
    main()
