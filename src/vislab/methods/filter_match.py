"""Which first-layer activation maps are edge detectors and which are colour detectors.

Idea:
    First convolutional layers of ImageNet CNNs learn oriented edge (Gabor-like) and
    colour-opponent filters (Krizhevsky et al., NIPS 2012, fig. 3; Zeiler & Fergus, ECCV 2014).
    Instead of judging the map grid by eye, each activation map of an image is correlated
    (Pearson r over the pixels) with reference responses computed on the same image:

    - oriented edges on the luminance Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601):
      ``sobel_x`` (vertical edges), ``sobel_y`` (horizontal edges), ``diagonal_45``,
      ``diagonal_135`` (the two diagonal Sobel kernels) and ``gradient_magnitude``
      sqrt(sobel_x^2 + sobel_y^2);
    - colour opponency: ``red_green`` = R - G, ``blue_yellow`` = B - (R + G) / 2;
    - brightness: ``luminance`` Y itself (a map that only follows brightness).

    The references are computed at the image's resolution (reflect padding, so borders do not
    invent edges) and resized to the maps' size (antialiased bilinear: a stride-2 first layer sees
    the image at half resolution). A map's kind is its best-matching reference by |r|; the sign of
    r says the polarity (e.g. a dark-to-light vs light-to-dark edge). A constant map has r = 0.

Arguments:
    image: (3, H, W) RGB float tensor in [0, 1], the image the maps were computed on.
    maps: (C, H', W') the first conv layer's activation maps for that image (any H', W').

Returns:
    :class:`FilterMatch`: ``correlations`` (C, R) Pearson r against the R references named in
    ``references``; ``best`` (C,) index of the best reference per map, ``best_r`` (C,) its signed
    r; ``rows()`` one dict per map for a table; ``kinds(threshold)`` "edge" / "colour" /
    "luminance" / "other".

Example:
    >>> tap = LayerTap(model, [backbone.first_conv_path()], root=backbone.net)
    >>> maps = tap(x[None])[backbone.first_conv_path()][0]       # (C, H', W')
    >>> match = match_filters(x, maps)
    >>> [row for row in match.rows() if row["abs_r"] > 0.8]
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

EDGE_REFERENCES = ("sobel_x", "sobel_y", "diagonal_45", "diagonal_135", "gradient_magnitude")
COLOUR_REFERENCES = ("red_green", "blue_yellow")
REFERENCES = EDGE_REFERENCES + COLOUR_REFERENCES + ("luminance",)
LUMA = (0.299, 0.587, 0.114)

_SOBEL = {
    "sobel_x": [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
    "sobel_y": [[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]],
    "diagonal_45": [[0.0, 1.0, 2.0], [-1.0, 0.0, 1.0], [-2.0, -1.0, 0.0]],
    "diagonal_135": [[-2.0, -1.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 1.0, 2.0]],
}


def sobel_kernels(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The four 3x3 oriented Sobel kernels as a (4, 1, 3, 3) conv weight, in ``EDGE_REFERENCES`` order."""
    return torch.tensor([_SOBEL[name] for name in EDGE_REFERENCES[:4]], dtype=dtype)[:, None]


def reference_responses(image: torch.Tensor) -> torch.Tensor:
    """The (R, H, W) reference responses of a (3, H, W) RGB image, in ``REFERENCES`` order."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W) RGB, got shape {tuple(image.shape)}")
    rgb = image.float()
    red, green, blue = rgb
    luma = torch.einsum("c,chw->hw", torch.tensor(LUMA), rgb)
    padded = F.pad(luma[None, None], (1, 1, 1, 1), mode="reflect")
    oriented = F.conv2d(padded, sobel_kernels())[0]  # (4, H, W)
    magnitude = oriented[:2].square().sum(0).sqrt()
    colour = torch.stack([red - green, blue - (red + green) / 2, luma])
    return torch.cat([oriented, magnitude[None], colour])


@dataclasses.dataclass
class FilterMatch:
    references: tuple[str, ...]
    correlations: torch.Tensor  # (C, R) Pearson r of each map with each reference

    @property
    def best(self) -> torch.Tensor:
        """(C,) index into ``references`` of each map's best match by |r|."""
        return self.correlations.abs().argmax(dim=1)

    @property
    def best_r(self) -> torch.Tensor:
        """(C,) signed r of each map's best match."""
        return self.correlations.gather(1, self.best[:, None]).squeeze(1)

    def kinds(self, threshold: float = 0.5) -> list[str]:
        """Per map, when its best |r| >= threshold, the family of its best reference: "edge",
        "colour" (opponent) or "luminance" (brightness, no structure); else "other"."""
        def family(name: str) -> str:
            return "edge" if name in EDGE_REFERENCES else "colour" if name in COLOUR_REFERENCES else "luminance"

        return ["other" if abs(r) < threshold else family(self.references[b])
                for b, r in zip(self.best.tolist(), self.best_r.tolist())]

    def rows(self) -> list[dict]:
        """One dict per map: ``map``, ``best`` (reference name), ``r`` (signed), ``abs_r``."""
        return [{"map": i, "best": self.references[b], "r": r, "abs_r": abs(r)}
                for i, (b, r) in enumerate(zip(self.best.tolist(), self.best_r.tolist()))]


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(A, B) Pearson r between the rows of ``a`` (A, P) and ``b`` (B, P); 0 where a row is constant."""
    both = torch.cat([a, b]).double()
    r = torch.corrcoef(both)[: len(a), len(a):]
    return torch.nan_to_num(r, nan=0.0).float()  # corrcoef gives NaN for a constant row


def match_filters(image: torch.Tensor, maps: torch.Tensor) -> FilterMatch:
    """Correlate each of ``maps`` (C, H', W') with the reference responses of ``image`` (3, H, W)."""
    if maps.ndim != 3:
        raise ValueError(f"maps must be (C, H', W'), got shape {tuple(maps.shape)}")
    refs = reference_responses(image.detach().cpu())
    size = tuple(maps.shape[-2:])
    if tuple(refs.shape[-2:]) != size:
        refs = F.interpolate(refs[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    r = pearson_rows(maps.detach().float().cpu().flatten(1), refs.flatten(1))
    return FilterMatch(references=REFERENCES, correlations=r)
