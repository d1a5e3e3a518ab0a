"""Typed experiment configs: one dataclass per experiment, every field a CLI option.

Precedence when resolving a config: dataclass defaults < ``--config FILE`` (YAML or TOML)
< options given on the command line. The resolved config is saved in the run folder.

Declare a field with :func:`option` so that it carries its help text::

    @dataclass
    class MyConfig(RunConfig):
        lr: float = option(0.01, "learning rate")
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from .errors import UserError

C = TypeVar("C")


def option(default: Any, help: str, *, short: str | None = None, cli: bool = True,
           consts: dict[str, Any] | None = None, min: float | None = None, max: float | None = None,
           min_exclusive: bool = False, max_exclusive: bool = False, resume_safe: bool = False) -> Any:
    """A dataclass field with help text, an optional short flag such as ``-k``, and optional
    flags that set a constant (``consts={"--no-weights": "none"}``).

    ``min`` / ``max`` bound a numeric option, or each item of a list option (``min_exclusive`` /
    ``max_exclusive``: strictly above / below); every float option must be finite. Both are
    enforced when the config is built (:func:`build_config`), before any command runs.
    ``resume_safe``: the option may change between a run and its ``--resume`` without changing
    the result (evaluation batch size, threads, progress frequency, time limits); all others are
    part of :func:`resume_identity` and must stay the same.
    """
    meta = {"help": help, "short": short, "cli": cli, "consts": consts or {}, "min": min, "max": max,
            "min_exclusive": min_exclusive, "max_exclusive": max_exclusive, "resume_safe": resume_safe}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class RunConfig:
    """Fields shared by every experiment."""

    out: str | None = option(None, "run folder to write (default: runs/<experiment>/<timestamp>)")
    seed: int = option(0, "random seed (same config + seed on CPU gives the same numbers)", min=0, max=2**63 - 1)
    device: Literal["auto", "cpu", "cuda"] = option("auto", "where to compute: auto picks cuda when available")
    overwrite: bool = option(False, "replace the run folder given by --out if it already exists (or discard "
                                    "the checkpoint of an interrupted run there)")


# Where and how a run is written, not what it computes: never part of its identity. The device
# too: a run checkpointed on a GPU may be resumed on a CPU and the other way round.
_NOT_IDENTITY = ("out", "overwrite", "resume", "device")


def resume_identity(cfg: Any) -> dict[str, Any]:
    """The options (JSON values) that must not change between a run and its ``--resume``: all
    fields of config dataclass ``cfg`` except the ``resume_safe`` ones and the bookkeeping above."""
    values = config_to_dict(cfg)
    return {f.name: values[f.name] for f in dataclasses.fields(cfg)
            if f.name not in _NOT_IDENTITY and not f.metadata.get("resume_safe", False)}


_NOT_RECORDED = object()


def check_same_options(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Refuse to resume ``where`` (e.g. "the checkpoint in runs/x.partial") if an option of
    ``current`` (a :func:`resume_identity`) differs from ``saved`` (an identity or a whole saved
    config; options ``current`` lacks are ignored). The error names the first differing option."""
    for name, value in current.items():
        before = saved.get(name, _NOT_RECORDED)
        if before != value:
            was = "(not recorded)" if before is _NOT_RECORDED else json.dumps(before)
            raise UserError(f"--resume: {where} was made with {_flag(name)} {was}, not {json.dumps(value)}; "
                            f"rerun with the same options, or start over with --overwrite")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _converter(tp: Any):
    """A function turning one command-line string into a value of ``tp``."""
    if tp is bool:
        return _parse_bool
    if tp in (int, float, str):
        return tp
    if get_origin(tp) is Literal:
        values = get_args(tp)
        return type(values[0])
    raise TypeError(f"unsupported config field type {tp!r}")


def _parse_bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one option per field of dataclass ``cls`` (plus ``--config``) to ``parser``.

    Defaults are *not* put in the namespace (``argparse.SUPPRESS``) so that a config file can
    sit between the dataclass defaults and the explicit options.
    """
    hints = typing.get_type_hints(cls)
    parser.add_argument(
        "--config", metavar="FILE", default=argparse.SUPPRESS,
        help="YAML or TOML file with any of the options below (command-line options win)",
    )
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        tp = _unwrap_optional(hints[f.name])[0]
        flags = ["--" + f.name.replace("_", "-")]
        if f.metadata.get("short"):
            flags.insert(0, f.metadata["short"])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "")
        help_text = f"{help_text} (default: {default!r})" if default is not None else help_text
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(tp) in (list, tuple):
            (item,) = set(get_args(tp)) - {Ellipsis}
            item, _ = _unwrap_optional(item)
            kwargs.update(nargs="+", type=_converter(item))
            if get_origin(item) is Literal:
                kwargs["choices"] = get_args(item)
        else:
            kwargs["type"] = _converter(tp)
            if get_origin(tp) is Literal:
                kwargs["choices"] = get_args(tp)
            kwargs["metavar"] = None if "choices" in kwargs else f.name.upper()
        parser.add_argument(*flags, **kwargs)
        for flag, const in f.metadata.get("consts", {}).items():
            parser.add_argument(flag, dest=f.name, action="store_const", const=const, default=argparse.SUPPRESS,
                                help=f"same as {flags[-1]} {const}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``/``.json``) or TOML (``.toml``) file into a dict of options."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path}: no such file; give the path of a YAML or TOML file of options")
    if path.suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise UserError(f"--config {path}: use a .yaml, .yml, .toml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"config file {path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from e
    data = _parse_config_text(path, text)
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of option names to values, "
                        f"not a {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _parse_config_text(path: Path, text: str) -> Any:
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:  # its message carries "(at line L, column C)"
            raise UserError(f"config file {path} is not valid TOML: {e}; fix the file") from e
    import yaml

    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"config file {path} is not valid YAML{where}: {problem}; fix the file") from e


def build_config(cls: type[C], overrides: dict[str, Any] | None = None) -> C:
    """Instantiate ``cls`` from defaults + ``overrides``, rejecting unknown names, bad types,
    non-finite floats and values outside an option's ``min`` / ``max`` (:class:`UserError`)."""
    return cls(**_coerce_options(cls, dict(overrides or {})))


def _coerce_options(cls: type, given: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    """The checked, typed values of ``given`` (option name -> raw value) for dataclass ``cls``;
    ``source`` (e.g. "config file x.yaml") is named in the errors about them."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{source}: " if source else ""
    unknown = sorted(set(given) - set(fields))
    if unknown:
        known = ", ".join(_flag(n) for n in sorted(fields))
        raise UserError(f"{prefix}unknown option(s) {', '.join(unknown)}; known: {known}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in given.items():
        try:
            values[name] = _coerce(name, hints[name], value, fields[name].metadata)
        except UserError as e:
            raise UserError(prefix + str(e)) from None
    return values


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _coerce(name: str, tp: Any, value: Any, meta: typing.Mapping[str, Any]) -> Any:
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise UserError(f"{_flag(name)} cannot be empty")
    origin = get_origin(tp)
    if origin in (list, tuple):
        (item,) = set(get_args(tp)) - {Ellipsis}
        seq = value if isinstance(value, (list, tuple)) else [value]
        return [_coerce(name, item, v, meta) for v in seq]
    if origin is Literal:
        if value not in get_args(tp):
            raise UserError(f"{_flag(name)} {value!r}: choose one of {', '.join(map(str, get_args(tp)))}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        try:
            return _parse_bool(value)
        except argparse.ArgumentTypeError as e:
            raise UserError(f"{_flag(name)}: {e}") from None
    if tp is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if tp in (int, float) and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = tp(value)
        except ValueError:
            number = None  # a float for an int option, or text that is no number: reported below
        if number is not None and (tp is float or not isinstance(value, float)):
            return _check_range(name, number, meta)
    raise UserError(f"{_flag(name)} {value!r}: expected {_type_name(tp)}")


def _type_name(tp: Any) -> str:
    return {int: "a whole number", float: "a number", str: "text"}.get(tp, getattr(tp, "__name__", str(tp)))


def _check_range(name: str, value: float, meta: typing.Mapping[str, Any]) -> float:
    """``value`` if finite and within the option's ``min`` / ``max``, else a :class:`UserError`."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{_flag(name)} {value}: must be a finite number")
    lo, hi = meta.get("min"), meta.get("max")
    lo_open, hi_open = meta.get("min_exclusive", False), meta.get("max_exclusive", False)
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and (value >= hi if hi_open else value > hi)
    if too_low or too_high:
        raise UserError(f"{_flag(name)} {value}: out of range; use a value {_range_text(lo, hi, lo_open, hi_open)}")
    return value


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None and not (lo_open or hi_open):
        return f"from {lo} to {hi}"
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi}")
    return " and ".join(parts)


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """Resolve a config from an argparse namespace built by :func:`add_config_arguments`."""
    given = vars(args)
    values: dict[str, Any] = {}
    if given.get("config"):
        path = given["config"]
        values.update(_coerce_options(cls, load_config_file(path), source=f"config file {path}"))
    names = {f.name for f in dataclasses.fields(cls)}
    values.update(_coerce_options(cls, {k: v for k, v in given.items() if k in names}))
    return cls(**values)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


# Every command added with add_command: name -> (config class, run function). The study runs
# commands through it, so that a study run is exactly what `vislab NAME --options` would run.
COMMANDS: dict[str, tuple[type, Any]] = {}


def add_command(subparsers: Any, name: str, cfg_cls: type[C], run: Any, help: str,
                description: str | None = None) -> argparse.ArgumentParser:
    """Add subcommand ``name`` whose options are the fields of ``cfg_cls``; it calls
    ``run(cfg) -> exit status`` with the resolved config."""
    parser = subparsers.add_parser(name, help=help, description=description or help)
    COMMANDS[name] = (cfg_cls, run)
    add_config_arguments(parser, cfg_cls)
    parser.set_defaults(handler=lambda args: run(config_from_args(cfg_cls, args)))
    return parser

