"""The feature cache's chunks extracted in parallel on a Ray cluster: one chunk = one Ray task.

A drop-in ``chunk_source`` of :func:`vislab.feature_cache.extract_features`: each task runs
:func:`~vislab.feature_cache.extract_chunks` on its one chunk with the driver's extractor (sent once
through Ray's object store: the same weights, device and precision, so the same cache key) and
returns the arrays; the driver writes them into the cache on its disk as they arrive, so the cache
is the one a local run reads (a cache hit) and only the image files must be visible to every node.

Same features as a local extraction, bit for bit on CPU, when ``batch_size`` divides the chunk size
(256 images; the defaults do): the network then sees the same batches, since a local pass's batches
also restart at each chunk.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np

from .cluster import check_shared_storage, ray_session, task_options, use_threads
from .data.scenes import ImageList
from .feature_cache import extract_chunks
from .methods.features import FeatureExtractor
from .progress import progress


def _extract_one(images: ImageList, extractor: FeatureExtractor, index: int, chunk: int, resize: str,
                 batch_size: int, workers: int, threads: int) -> tuple[int, dict[str, np.ndarray], np.ndarray]:
    use_threads(threads)
    [result] = extract_chunks(images, extractor, [index], chunk, resize=resize, batch_size=batch_size,
                              workers=workers, desc=f"chunk {index}")
    return result


class RayChunks:
    """A chunk source that runs on the Ray cluster at ``address`` (None: ``$RAY_ADDRESS`` or a local
    one), joined on first use (a full cache hit starts no Ray) and left when the ``with`` block ends.
    ``inputs``: the paths the tasks read (the image folder), checked to be visible on every node."""

    def __init__(self, address: str | None, cpus_per_task: int = 1, inputs: Sequence[str] = (),
                 option: str = "--data"):
        self.address, self.cpus, self.inputs, self.option = address, cpus_per_task, list(inputs), option
        self._stack = contextlib.ExitStack()
        self._ray: Any = None

    def __enter__(self) -> "RayChunks":
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self._ray = None

    def _connect(self) -> Any:
        if self._ray is None:
            ray = self._stack.enter_context(ray_session(self.address))
            check_shared_storage(ray, None, self.inputs, option=self.option)
            self._ray = ray
        return self._ray

    def __call__(self, images: ImageList, extractor: FeatureExtractor, chunks: Sequence[int], chunk: int, *,
                 resize: str, batch_size: int, workers: int,
                 desc: str) -> Iterator[tuple[int, dict[str, np.ndarray], np.ndarray]]:
        ray = self._connect()
        task = ray.remote(_extract_one).options(**task_options(ray, self.cpus, extractor.device.type))
        # absolute paths: a worker's working folder is not the driver's
        absolute = ImageList(images.root.absolute(), images.split, [p.absolute() for p in images.paths],
                             images.labels, images.classes)
        images_ref, extractor_ref = ray.put(absolute), ray.put(extractor)
        pending = [task.remote(images_ref, extractor_ref, i, chunk, resize, batch_size, workers, self.cpus)
                   for i in chunks]
        bar = progress(desc=f"{desc} ({len(pending)} Ray tasks)", total=len(chunks), unit="chunk")
        try:
            while pending:
                [done], pending = ray.wait(pending, num_returns=1)
                yield ray.get(done)
                bar.update(1)
        finally:
            bar.close()
            for ref in pending:  # stopped early (an error): do not leave the cluster working for nothing
                ray.cancel(ref)
