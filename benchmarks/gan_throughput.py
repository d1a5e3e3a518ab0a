"""DCGAN training throughput: vislab's loop vs the straightforward reference loop, same run.

Reference (the course's loop): ``torchvision.datasets.MNIST`` + ``DataLoader(batch_size=128,
shuffle=True)`` with per-sample ``Resize(32) + ToTensor + Normalize(0.5, 0.5)`` on PIL images,
float32 contiguous networks (plain ``nn.Sequential`` per SPEC Part D), ``nn.BCELoss`` on the
Sigmoid outputs, Adam with its default (for-loop) implementation.

vislab: the code path of ``vislab gan`` (:class:`vislab.methods.gan.Digits` batches,
:meth:`vislab.methods.gan.GAN.update` steps): MNIST as one in-memory tensor resized once, batches by
index, bf16 autocast with float32 losses (``--precision``, by default ``vislab gan``'s ``auto``: bf16
where the CPU runs it natively), channels_last, fused Adam, D's weight gradients skipped in G's
backward.

Both train the same architecture (parameter counts checked) with the same hyper-parameters. Each
loop runs in its own spawned process (``isolated.py``: no loop inherits the other's heap), the
vislab one with ``vislab.allocator.retain_freed_memory`` as in the ``vislab`` command, and the
reference both without and with it. The loops take turns in rounds; each round times ``--batches``
consecutive batches after a warm-up; the table reports the median over rounds, images/s and the
speed ratio.

    flock /tmp/vislab-cpu.lock .venv/bin/python benchmarks/gan_throughput.py --data-root /work/shared/data/mnist
"""
from __future__ import annotations

import argparse
import gzip
import math
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from isolated import Loop, time_loops
from vislab.data.mnist import load_mnist
from vislab.io import write_json
from vislab.methods.gan import GAN, Digits
from vislab.models.dcgan import build_gan, count_parameters
from vislab.models.mnist_classifier import prepare_digits
from vislab.precision import PRECISIONS, precision_name, resolve_precision

BATCH = 128
NZ = 100


def reference_models(nz: int = NZ, ngf: int = 32, ndf: int = 32) -> tuple[nn.Module, nn.Module]:
    """The SPEC's DCGAN written the plain way (as in the PyTorch DCGAN tutorial)."""
    g = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False), nn.Tanh())
    d = nn.Sequential(
        nn.Conv2d(1, ndf, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False), nn.Sigmoid())
    return g, d


def torchvision_root(data_root: str, tmp: Path) -> Path:
    """torchvision's MNIST wants uncompressed files under ROOT/MNIST/raw; build that from the .gz files."""
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        src = Path(data_root) / (stem + ".gz")
        if src.is_file():
            with gzip.open(src, "rb") as fi, open(raw / stem, "wb") as fo:
                shutil.copyfileobj(fi, fo)
        elif (Path(data_root) / stem).is_file():
            shutil.copy(Path(data_root) / stem, raw / stem)
        else:
            sys.exit(f"gan_throughput: {src} not found; --data-root must hold the MNIST IDX files")
    return tmp


class ReferenceLoop:
    def __init__(self, root: Path, seed: int):
        import torchvision.transforms as T
        from torchvision.datasets import MNIST

        torch.manual_seed(seed)
        tf = T.Compose([T.Resize(32), T.ToTensor(), T.Normalize((0.5,), (0.5,))])
        self.loader = torch.utils.data.DataLoader(MNIST(str(root), train=True, transform=tf, download=False),
                                                  batch_size=BATCH, shuffle=True)
        self.g, self.d = reference_models()
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=5e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.bce = nn.BCELoss()
        self.it = iter(self.loader)

    def step(self) -> None:
        try:
            x, _ = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            x, _ = next(self.it)
        n = x.shape[0]
        ones, zeros = torch.ones(n), torch.zeros(n)
        self.opt_d.zero_grad()
        out_real = self.d(x).view(-1)
        fake = self.g(torch.randn(n, NZ, 1, 1))
        out_fake = self.d(fake.detach()).view(-1)
        (self.bce(out_real, ones) + self.bce(out_fake, zeros)).backward()
        self.opt_d.step()
        self.opt_g.zero_grad()
        self.bce(self.d(fake).view(-1), ones).backward()
        self.opt_g.step()


class VislabLoop:
    def __init__(self, data_root: str, seed: int, precision: str):
        torch.manual_seed(seed)
        self.data = Digits(prepare_digits(load_mnist("train", data_root).images, 32), None, BATCH, NZ)
        g, d = build_gan("dcgan")
        self.gan = GAN(g.to(memory_format=torch.channels_last), d.to(memory_format=torch.channels_last),
                       g_loss="non-saturating", dtype=resolve_precision(precision, torch.device("cpu")))
        self.rngs = {"data": torch.Generator().manual_seed(seed)}
        self.steps_per_epoch = math.ceil(len(self.data.x) / BATCH)
        self.order, self.i = self.data.order(self.rngs), 0

    def step(self) -> None:
        if self.i == self.steps_per_epoch:
            self.order, self.i = self.data.order(self.rngs), 0
        self.gan.update(self.data.batch(self.order, self.i, self.rngs))
        self.i += 1


def build_reference(root: str, seed: int):
    return ReferenceLoop(Path(root), seed).step


def build_vislab(data_root: str, seed: int, precision: str):
    return VislabLoop(data_root, seed, precision).step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="folder with the MNIST IDX .gz files")
    p.add_argument("--batches", type=int, default=50, help="timed batches per round and loop (default 50)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--warmup", type=int, default=5, help="untimed batches per loop before timing (default 5)")
    p.add_argument("--out", default="benchmarks/results/gan_throughput.json", help="JSON file to write")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="vislab's precision (default auto, as in vislab gan: bf16 where the CPU runs it natively)")
    args = p.parse_args(argv)

    ref_g, ref_d = reference_models()
    vis_g, vis_d = build_gan("dcgan")
    assert count_parameters(ref_g) == count_parameters(vis_g) == 369_600
    assert count_parameters(ref_d) == count_parameters(vis_d) == 166_848
    precision = precision_name(resolve_precision(args.precision, torch.device("cpu")))
    with tempfile.TemporaryDirectory() as tmp:
        root = str(torchvision_root(args.data_root, Path(tmp)))
        loops = {
            "reference (torchvision DataLoader, PIL Resize, fp32)": Loop(build_reference, (root, args.seed), False),
            "reference with vislab's allocator policy": Loop(build_reference, (root, args.seed), True),
            f"vislab (in-memory, {precision}, channels_last)": Loop(build_vislab, (args.data_root, args.seed,
                                                                                   args.precision), True),
        }
        timings = time_loops(loops, args.batches, args.rounds, args.warmup, report=lambda m: print(m, file=sys.stderr))
    rates = {name: t.rates for name, t in timings.items()}

    rows = []
    for name, r in rates.items():
        med = statistics.median(r)
        rows.append({"loop": name, "median_ms_per_batch": round(1000 / med, 2), "batches_per_s": round(med, 2),
                     "images_per_s": round(BATCH * med, 1), "rounds": [round(x, 3) for x in r]})
    ref_rate, ref_retain_rate, vis_rate = (statistics.median(r) for r in rates.values())
    ratio = vis_rate / ref_rate
    width = max(len(r["loop"]) for r in rows)
    print(f"{'loop':{width}s}  ms/batch  batches/s  images/s")
    for r in rows:
        print(f"{r['loop']:{width}s}  {r['median_ms_per_batch']:8.1f}  {r['batches_per_s']:9.2f}  {r['images_per_s']:8.0f}")
    print(f"speed-up (median rate vislab / reference): {ratio:.2f}x; against the reference with the same "
          f"allocator policy: {vis_rate / ref_retain_rate:.2f}x")
    print(f"5 epochs (2,345 batches) at these medians: reference {2345 / ref_rate / 60:.1f} min, "
          f"vislab {2345 / vis_rate / 60:.1f} min")
    write_json(args.out, {"benchmark": "gan_throughput", "batch_size": BATCH, "rows": rows, "ratio": round(ratio, 3),
                          "ratio_same_allocator": round(vis_rate / ref_retain_rate, 3), "process_per_loop": True,
                          "rounds": args.rounds, "batches_per_round": args.batches, "torch": torch.__version__,
                          "vislab_precision": precision,
                          "threads": timings[next(iter(loops))].torch_threads,
                          "machine": platform.processor() or platform.machine()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
