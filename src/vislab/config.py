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
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

C = TypeVar("C")


def option(default: Any, help: str, *, short: str | None = None, cli: bool = True,
           consts: dict[str, Any] | None = None, min: float | None = None, max: float | None = None,
           min_exclusive: bool = False, resume_safe: bool = False) -> Any:
    """A dataclass field with help text, an optional short flag such as ``-k``, and optional
    flags that set a constant (``consts={"--no-weights": "none"}``).

    ``min`` / ``max`` bound a numeric option (``min_exclusive``: strictly above ``min``); every
    float option must be finite. ``resume_safe``: the option may change between a run and its
    ``--resume`` (output, device, evaluation batch size...); all others must stay the same.
    """
    meta = {"help": help, "short": short, "cli": cli, "consts": consts or {}, "min": min, "max": max,
            "min_exclusive": min_exclusive, "resume_safe": resume_safe}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class RunConfig:
    """Fields shared by every experiment."""

    out: str | None = option(None, "run folder to write (default: runs/<experiment>/<timestamp>)")
    seed: int = option(0, "random seed (same config + seed on CPU gives the same numbers)")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "where to compute: auto picks cuda when available")
    overwrite: bool = option(False, "replace the run folder given by --out if it already exists")


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
        tp, optional = _unwrap_optional(hints[f.name])
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
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file into a dict of options."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        data = tomllib.loads(text)
    elif path.suffix in (".yaml", ".yml", ".json"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        raise ValueError(f"config file {path}: use a .yaml, .yml, .toml or .json file")
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of option names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}


def build_config(cls: type[C], overrides: dict[str, Any] | None = None) -> C:
    """Instantiate ``cls`` from defaults + ``overrides``, rejecting unknown names and bad types."""
    overrides = dict(overrides or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; known: {', '.join(sorted(names))}"
        )
    hints = typing.get_type_hints(cls)
    values = {k: _coerce(k, hints[k], v) for k, v in overrides.items()}
    return cls(**values)


def _coerce(name: str, tp: Any, value: Any) -> Any:
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"option {name} cannot be empty")
    origin = get_origin(tp)
    if origin in (list, tuple):
        (item,) = set(get_args(tp)) - {Ellipsis}
        seq = value if isinstance(value, (list, tuple)) else [value]
        return [_coerce(name, item, v) for v in seq]
    if origin is Literal:
        if value not in get_args(tp):
            raise ValueError(f"option {name}={value!r} must be one of {list(get_args(tp))}")
        return value
    if tp is bool:
        return value if isinstance(value, bool) else _parse_bool(value)
    if tp is float and isinstance(value, (int, float, str)):
        return float(value)
    if tp is int and isinstance(value, (int, str)) and not isinstance(value, bool):
        return int(value)
    if tp is str:
        return str(value)
    raise ValueError(f"option {name}={value!r} should be of type {getattr(tp, '__name__', tp)}")


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """Resolve a config from an argparse namespace built by :func:`add_config_arguments`."""
    given = vars(args)
    values: dict[str, Any] = {}
    if given.get("config"):
        values.update(load_config_file(given["config"]))
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in given.items() if k in names})
    return build_config(cls, values)


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


# -- resume identity: the options a resumed run must share with the run it continues ------------------
# RunConfig's bookkeeping never changes a result; everything else must match unless its option says
# resume_safe=True.
_RESUME_BOOKKEEPING = ("out", "overwrite", "resume", "device")


def resume_identity(cfg: Any) -> dict[str, Any]:
    """The resolved options of ``cfg`` that decide its result (compared on ``--resume``)."""
    values = config_to_dict(cfg)
    return {f.name: values[f.name] for f in dataclasses.fields(cfg)
            if f.name not in _RESUME_BOOKKEEPING and not f.metadata.get("resume_safe", False)}


def check_same_options(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Refuse to resume ``where`` (a folder or checkpoint) made with other options: a UserError naming
    the first option that differs, with both values."""
    from .errors import UserError

    for name in sorted(set(saved) | set(current)):
        if saved.get(name, "<unset>") != current.get(name, "<unset>"):
            flag = "--" + name.replace("_", "-")
            raise UserError(
                f"--resume: {where} was made with {flag} {saved.get(name, '<unset>')!r}, this command gives "
                f"{current.get(name, '<unset>')!r}; rerun with the same options, or start over with --overwrite")
