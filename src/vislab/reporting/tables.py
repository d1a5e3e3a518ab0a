"""Tables as Markdown text: readable on a terminal (columns padded) and rendered by any Markdown viewer."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:
    from ..models.summary import LayerRow

Format = str | Callable[[Any], str]


def format_cell(value: Any, spec: Format | None = None) -> str:
    """One cell: ``spec`` (a format spec such as ``".4f"``, or a function) when given; otherwise None
    is empty, floats get 4 significant decimals below 1 and 2 above, everything else ``str``."""
    if value is None:
        return ""
    if callable(spec):
        return spec(value)
    if spec is not None:
        return format(value, spec)
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def mean_std(mean: float, std: float | None = None, seeds: int = 1) -> str:
    """A mean over seeds as the report writes it everywhere: ``0.795 +- 0.016 (3 seeds)``; one seed
    (``std`` None) is the bare value."""
    return f"{mean:.3f}" + (f" +- {std:.3f} ({seeds} seeds)" if std is not None else "")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | Mapping[str, str],
                   formats: Mapping[str, Format] | None = None, right: Sequence[str] | None = None) -> str:
    """``rows`` (dicts) as a Markdown table, one line per row, no trailing newline.

    ``columns``: the keys to show, in order, or ``{key: header}``; a key a row lacks gives an empty
    cell. ``formats``: ``{key: format spec or function}`` (see :func:`format_cell`). ``right``: the
    keys of right-aligned columns; by default those whose values are all numbers."""
    headers = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
    formats = formats or {}
    cells = [[format_cell(r.get(k), formats.get(k)) for k in headers] for r in rows]
    if right is None:
        right = [k for k in headers if any(r.get(k) is not None for r in rows) and
                 all(isinstance(r.get(k), (int, float)) for r in rows if r.get(k) is not None)]
    numeric = [k in right for k in headers]
    widths = [max([len(h), 3] + [len(line[i]) for line in cells]) for i, h in enumerate(headers.values())]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w)
                                 for v, w, num in zip(values, widths, numeric)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if num else "-" * (w + 2) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(list(headers.values())), rule] + [line(c) for c in cells])


def layers_markdown(rows: Sequence[LayerRow]) -> str:
    """The layer table of ``vislab inspect``: :func:`vislab.models.summary.layer_table`'s rows, with the
    output shape without its batch dimension ("-" for a module that never ran) and the share in percent."""
    cells = [{"layer": r.name, "type": r.type, "params": r.params, "share": r.share,
              "output shape": "x".join(map(str, r.output_shape[1:])) if r.output_shape else "-"} for r in rows]
    return markdown_table(cells, ["layer", "type", "output shape", "params", "share"],
                          {"params": ",", "share": lambda share: f"{100 * share:.2f}%"}, right=["params", "share"])
