"""CNN features from any named layer, extracted fast and cached on disk.

The transfer-learning recipe of Chatfield et al. (2014, "Return of the devil in the details"):
run a frozen ImageNet network on every image, read the output of one layer (VGG16 relu7: 4096-d)
and L2-normalise it, ``f / ||f||_2``, before a linear classifier.

Shapes: images (N, 3, H, W) in pixel space [0,1] -> per layer (N, D) float32. A 4-D layer output
(N, C, h, w) becomes (N, C) by global average (``pool="avg"``) or max pooling, or (N, C*h*w) with
``pool="flatten"``.

Speed on CPU: ``torch.inference_mode``, channels_last tensors (what oneDNN's convolutions want),
bf16 autocast (AMX / AVX512-BF16 units), batches decoded by DataLoader workers while the network
runs, and :class:`~vislab.models.taps.LayerTap` stopping the forward pass at the deepest layer
asked for. Several layers come out of one pass.

Cache: one folder per (dataset content, backbone, weights, layer, preprocessing, precision,
pooling) key. Features are streamed to disk in chunks written atomically, so memory stays bounded
and an interrupted extraction resumes at the first missing chunk; when all chunks exist they are
merged into ``features.npy`` and ``done.json`` is written last (the completeness marker).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.images import to_rgb
from ..data.scenes import ImageList
from ..errors import ImageReadError, UserError
from ..io import atomic_path, write_json
from ..models.backbones import Backbone, PixelModel
from ..models.fold import fold_batchnorm
from ..models.taps import LayerTap
from ..progress import progress

CACHE_FORMAT = 1
CHUNK_IMAGES = 256


# --- small numerical pieces ----------------------------------------------------------------

def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows divided by their L2 norm (a zero row stays zero): (N, D) -> (N, D) float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


def pool_output(t: torch.Tensor, pool: str = "avg") -> torch.Tensor:
    """A layer output -> (N, D): (N, C, h, w) pooled over space (avg/max) or flattened; 2-D as is."""
    if t.ndim == 2:
        return t
    if t.ndim == 4 and pool == "avg":
        return t.mean(dim=(2, 3))
    if t.ndim == 4 and pool == "max":
        return t.amax(dim=(2, 3))
    if pool not in ("avg", "max", "flatten"):
        raise ValueError(f"pool {pool!r}: use avg, max or flatten")
    return t.flatten(1)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where the hardware runs it natively (CUDA with bf16, CPU with
    AVX512-BF16/AMX through oneDNN), else ``fp32``."""
    if precision in ("bf16", "fp32"):
        return precision
    if precision != "auto":
        raise ValueError(f"precision {precision!r}: use auto, bf16 or fp32")
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bf16" if native else "fp32"


def weights_digest(net: torch.nn.Module) -> str:
    """SHA-256 of a network's parameters and buffers (names, shapes, values): the cache key of
    its weights, whatever their origin (package, torchvision, state-dict file, seeded random init)."""
    h = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# --- the network part ----------------------------------------------------------------------

def inplace_activations(net: nn.Module, paths: Sequence[str], input_size: int) -> tuple[nn.Module, int]:
    """A copy of ``net`` whose activations (ReLU, ReLU6, ...) run in place, except where that would
    overwrite the output of a tapped layer (``paths``).

    vislab's backbones switch in-place activations off so that hooks see true outputs; for
    extraction, where only ``paths`` are read, writing in place saves one large allocation per
    activation -- on CPU each one costs page faults and zeroing (about +20 % images/s for VGG16).
    Checked on a random input: any difference in the tapped outputs returns ``net`` unchanged.
    Returns (network, activations switched)."""
    candidates = [m for m in net.modules() if getattr(m, "inplace", None) is False]
    if not candidates:
        return net, 0
    fast = copy.deepcopy(net).eval()
    tapped_storage: set[int] = set()
    unsafe: set[int] = set()
    mods = dict(fast.named_modules())

    def tap_hook(_m, _inputs, output):
        if torch.is_tensor(output):
            tapped_storage.add(output.untyped_storage().data_ptr())

    def act_hook(m, inputs):
        if inputs and torch.is_tensor(inputs[0]) and inputs[0].untyped_storage().data_ptr() in tapped_storage:
            unsafe.add(id(m))

    x = torch.rand(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    x = x.to(next(net.parameters()).device)
    hooks = [mods[p].register_forward_hook(tap_hook) for p in paths]
    hooks += [m.register_forward_pre_hook(act_hook) for m in fast.modules() if getattr(m, "inplace", None) is False]
    try:
        with torch.no_grad():
            LayerTap(fast, list(paths))(x)
    finally:
        for h in hooks:
            h.remove()
    n = 0
    for m in fast.modules():
        if getattr(m, "inplace", None) is False and id(m) not in unsafe:
            m.inplace = True
            n += 1
    with torch.no_grad():
        want, got = LayerTap(net, list(paths))(x), LayerTap(fast, list(paths))(x)
    if any(not torch.equal(want[p], got[p]) for p in paths):
        return net, 0
    return fast.requires_grad_(False), n


class FeatureExtractor:
    """A frozen backbone read at ``layers`` (friendly names or module paths), in pixel space.

    ``extractor(x)`` with x (N, 3, H, W) in [0,1] -> {layer: (N, D) float32 tensor on CPU}.
    """

    def __init__(self, backbone: Backbone, layers: Sequence[str], *, precision: str = "auto",
                 pool: str = "avg", channels_last: bool = True, fold_bn: bool = True,
                 bf16_weights: bool = False, inplace: bool = True, device: torch.device | str = "cpu"):
        self.backbone, self.layers = backbone, list(layers)
        self.paths = [backbone.module_path(layer) for layer in self.layers]
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.pool, self.channels_last = pool, channels_last
        net, self.folded_bn = backbone.net, 0
        if fold_bn:
            net, self.folded_bn = fold_batchnorm(backbone.net, backbone.preprocess.input_size, keep=self.paths)
        self.inplace_acts = 0
        if inplace:
            net, self.inplace_acts = inplace_activations(net, self.paths, backbone.preprocess.input_size)
        # bf16 weights instead of autocast: autocast re-casts every fp32 weight on every batch,
        # which for VGG16's 124M fully-connected weights is a large share of the time.
        self.bf16_weights = bf16_weights and self.precision == "bf16"
        if self.bf16_weights:
            net = (copy.deepcopy(net) if net is backbone.net else net).to(torch.bfloat16)
        model = PixelModel(net, backbone.preprocess.mean, backbone.preprocess.std).eval().to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._tap = LayerTap(model, self.paths, root=net)
        self._weights_digest: str | None = None

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        if self.bf16_weights:
            x = x.to(torch.bfloat16)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16" and not self.bf16_weights):
            out = self._tap(x)
        return {layer: pool_output(out[path], self.pool).float().cpu()
                for layer, path in zip(self.layers, self.paths)}

    def key_fields(self, layer: str, resize: str) -> dict:
        """Everything besides the images that determines the features of ``layer`` (beyond rounding)."""
        pre = self.backbone.preprocess
        if self._weights_digest is None:
            self._weights_digest = weights_digest(self.backbone.net)
        return {
            "format": CACHE_FORMAT, "model": self.backbone.name, "weights": self._weights_digest,
            "layer": self.backbone.module_path(layer), "pool": self.pool, "precision": self.precision,
            "resize": resize, "input_size": pre.input_size, "resize_to": pre.resize, "mean": list(pre.mean),
            "std": list(pre.std), "interpolation": pre.interpolation, "grayscale": "repeat",
            **({"bf16_weights": True} if self.bf16_weights else {}),
            # Not in the key: BN folding, batch size, workers -- they change features by rounding only,
            # and folding depends on which *other* layers are tapped in the same pass.
        }


def load_for_model(path: str | Path) -> Image.Image:
    """An image file as RGB, except that greyscale ("L") stays single-channel.

    Resizing one channel and then repeating it (:class:`ImageFiles`) gives exactly the tensor of
    the SPEC's repeat-then-resize at a third of the cost (15-Scene is all greyscale). Other modes
    go through :func:`vislab.data.images.to_rgb`. Raises :class:`ImageReadError` naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return img if img.mode == "L" else to_rgb(img)
    except FileNotFoundError as e:
        raise ImageReadError(f"{path}: no such file") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"{path}: cannot read image ({e})") from e


class ImageFiles(Dataset):
    """Decodes one image file per item -> (tensor (3, H, W) in [0,1], ok, label). An unreadable file
    gives ok=False (a zero image after collation), so one pass finds every bad file instead of
    stopping at the first."""

    def __init__(self, paths: Sequence[Path], transform, labels: Sequence[int] | None = None):
        self.paths, self.transform = list(paths), transform
        self.labels = [-1] * len(self.paths) if labels is None else [int(v) for v in labels]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            x = self.transform(load_for_model(self.paths[i]))
            return x.expand(3, -1, -1) if x.shape[0] == 1 else x, True, self.labels[i]
        except ImageReadError:
            return None, False, self.labels[i]


def _collate(batch, size: tuple[int, int]):
    ok = torch.tensor([b[1] for b in batch])
    x = torch.stack([b[0] if b[1] else torch.zeros(3, *size) for b in batch])
    return x, ok, torch.tensor([b[2] for b in batch], dtype=torch.long)


def image_loader(paths: Sequence[Path], transform, size: tuple[int, int], *, batch_size: int, workers: int,
                 labels: Sequence[int] | None = None, shuffle: bool = False,
                 generator: torch.Generator | None = None, pin_memory: bool = False) -> DataLoader:
    """Batches (x, ok, y) of decoded images, ``workers`` processes decoding ahead of the network."""
    import functools

    return DataLoader(ImageFiles(paths, transform, labels), batch_size=batch_size, shuffle=shuffle,
                      num_workers=workers, collate_fn=functools.partial(_collate, size=size), generator=generator,
                      pin_memory=pin_memory, prefetch_factor=4 if workers > 0 else None)


# --- the cache ------------------------------------------------------------------------------

@dataclasses.dataclass
class FeatureSet:
    """Features of one split at one layer. ``features`` may be a read-only memory map."""

    features: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int64
    valid: np.ndarray  # (N,) bool: False for images that could not be read
    paths: list[Path]
    layer: str
    key: str
    cache_hit: bool

    @property
    def bad_paths(self) -> list[Path]:
        return [p for p, ok in zip(self.paths, self.valid.tolist()) if not ok]

    def arrays(self, l2: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(X, y) of the readable images, X L2-normalised when ``l2``."""
        X = np.asarray(self.features[self.valid], dtype=np.float32)
        return (l2_normalize(X) if l2 else X), self.labels[self.valid]


class CacheEntry:
    """The on-disk features of one key: ``part-*.npz`` chunks while extracting, then
    ``features.npy`` + ``valid.npy`` + ``done.json``."""

    def __init__(self, root: Path, key: str, fields: dict, n: int, chunk: int | None = None):
        self.dir, self.key, self.fields, self.n = Path(root) / key, key, fields, n
        chunk = chunk or CHUNK_IMAGES
        meta = self.dir / "meta.json"
        if meta.is_file():
            saved = json.loads(meta.read_text())
            if saved.get("n") != n:  # same key, other length: cannot happen unless edited; start over
                shutil.rmtree(self.dir)
            else:
                chunk = saved["chunk"]
        self.chunk = chunk

    @property
    def done(self) -> bool:
        return (self.dir / "done.json").is_file()

    def start(self) -> None:
        if not (self.dir / "meta.json").is_file():
            write_json(self.dir / "meta.json", {"key": self.key, "n": self.n, "chunk": self.chunk, **self.fields})

    def part(self, i: int) -> Path:
        return self.dir / f"part-{i:05d}.npz"

    def parts_done(self) -> int:
        """Number of consecutive chunks already on disk (the resume point, in chunks)."""
        k = 0
        while self.part(k).is_file():
            k += 1
        return k

    def write_part(self, i: int, feats: np.ndarray, valid: np.ndarray) -> None:
        with atomic_path(self.part(i)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, features=feats, valid=valid)

    def finish(self, extra: dict) -> None:
        """Merge the chunks into one memory-mappable array (chunk by chunk: bounded memory)."""
        n_parts = -(-self.n // self.chunk)
        with np.load(self.part(0)) as first:
            dim = first["features"].shape[1]
        valid = np.zeros(self.n, dtype=bool)
        with atomic_path(self.dir / "features.npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(self.n, dim))
            for i in range(n_parts):
                with np.load(self.part(i)) as p:
                    lo = i * self.chunk
                    out[lo:lo + len(p["valid"])] = p["features"]
                    valid[lo:lo + len(p["valid"])] = p["valid"]
            out.flush()
            del out
        with atomic_path(self.dir / "valid.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, valid)  # a file object: np.save would append ".npy" to the temporary name
        write_json(self.dir / "done.json", {"n": self.n, "dim": dim, **extra})
        for i in range(n_parts):
            self.part(i).unlink(missing_ok=True)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        return np.load(self.dir / "features.npy", mmap_mode="r"), np.load(self.dir / "valid.npy")


def cache_key(dataset_digest: str, fields: dict) -> str:
    return hashlib.sha256(json.dumps({"dataset": dataset_digest, **fields}, sort_keys=True).encode()).hexdigest()[:32]


@dataclasses.dataclass
class ExtractStats:
    images: int  # images that went through the network in this call (0 on a full cache hit)
    seconds: float
    cache_hit: bool

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.seconds if self.images and self.seconds > 0 else None


def extract_features(images: ImageList, extractor: FeatureExtractor, *, cache_root: str | Path, resize: str = "squash",
                     batch_size: int = 32, workers: int = 1, desc: str = "features") -> tuple[dict[str, FeatureSet], ExtractStats]:
    """Features of every image of ``images`` at every layer of ``extractor``, from the cache when
    present; missing layers are extracted in one pass from the first missing chunk on."""
    digest = images.digest()
    entries = {}
    for layer in extractor.layers:
        fields = extractor.key_fields(layer, resize)
        entries[layer] = CacheEntry(Path(cache_root), cache_key(digest, fields), fields, len(images))
    pending = {layer: e for layer, e in entries.items() if not e.done}
    n_run, t0 = 0, time.perf_counter()
    if pending:
        chunk = min(e.chunk for e in pending.values())
        if any(e.chunk != chunk for e in pending.values()):  # mixed old entries: restart those
            for e in pending.values():
                shutil.rmtree(e.dir, ignore_errors=True)
                e.chunk = chunk
        for e in pending.values():
            e.start()
        start_chunk = min(e.parts_done() for e in pending.values())
        n_run = _extract_range(images, extractor, pending, start_chunk * chunk, chunk, resize=resize,
                               batch_size=batch_size, workers=workers, desc=desc)
        for e in pending.values():
            e.finish({"seconds": round(time.perf_counter() - t0, 3), "images_extracted": n_run})
    stats = ExtractStats(n_run, time.perf_counter() - t0, cache_hit=not pending)
    out = {}
    for layer, e in entries.items():
        feats, valid = e.load()
        out[layer] = FeatureSet(feats, images.labels, valid, images.paths, layer, e.key, cache_hit=layer not in pending)
    return out, stats


def _extract_range(images: ImageList, extractor: FeatureExtractor, entries: dict[str, CacheEntry], start: int,
                   chunk: int, *, resize: str, batch_size: int, workers: int, desc: str) -> int:
    """Run images[start:] through the network, writing chunk files as they fill."""
    pre = extractor.backbone.preprocess
    loader = image_loader(images.paths[start:], pre.pixel_transform(resize), (pre.input_size, pre.input_size),
                          batch_size=batch_size, workers=workers, pin_memory=extractor.device.type == "cuda")
    buf: dict[str, list[np.ndarray]] = {layer: [] for layer in entries}
    buf_ok: list[np.ndarray] = []
    n_buf, part, done = 0, start // chunk, 0
    bar = progress(desc=desc, total=len(images) - start, unit="img")
    try:
        for x, ok, _ in loader:
            feats = extractor(x)
            for layer in entries:
                buf[layer].append(feats[layer].numpy())
            buf_ok.append(ok.numpy())
            n_buf += len(x)
            done += len(x)
            bar.update(len(x))
            while n_buf >= chunk or (done == len(images) - start and n_buf > 0):
                take = min(chunk, n_buf)
                ok_all = np.concatenate(buf_ok)
                for layer, e in entries.items():
                    allf = np.concatenate(buf[layer])
                    e.write_part(part, allf[:take], ok_all[:take])
                    buf[layer] = [allf[take:]]
                buf_ok = [ok_all[take:]]
                n_buf -= take
                part += 1
    finally:
        bar.close()
    if done != len(images) - start:
        raise RuntimeError(f"{desc}: the loader gave {done} images, expected {len(images) - start}")
    return done


def bad_image_error(bad: Sequence[Path]) -> UserError:
    listing = "\n  ".join(str(p) for p in bad)
    return UserError(f"{len(bad)} image file(s) cannot be read:\n  {listing}\n"
                     f"fix or remove them, or pass --skip-bad to leave them out (they are counted in metrics.json)")
