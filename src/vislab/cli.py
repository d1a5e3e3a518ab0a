"""The ``vislab`` command: one subcommand per experiment. Thin: parsing and error reporting only.

Each experiment module exposes ``register(subparsers)``, which adds its subcommand(s) with
:func:`vislab.config.add_command`; the work happens in the module's functions.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__, distributed
from .allocator import retain_freed_memory
from .errors import UserError
from .training import Paused

# Modules that define subcommands, in the order --help lists them.
COMMAND_MODULES = (
    "vislab.experiments.study",
    "vislab.experiments.demo",
    "vislab.experiments.inspection",
    "vislab.experiments.transfer",
    "vislab.experiments.saliency",
    "vislab.experiments.fool",
    "vislab.experiments.classviz",
    "vislab.experiments.adapt_summary",
    "vislab.experiments.adapt",
    "vislab.experiments.gan",
    "vislab.reporting.html",
    "vislab.experiments.data",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vislab",
        description="Classic deep-learning-for-vision experiments: CNN inspection and transfer learning, "
        "saliency / fooling / class visualisation, domain adaptation (DANN), GANs. "
        "Each command writes a run folder with config, metrics, manifest and figures.",
    )
    parser.add_argument("--version", action="version", version=f"vislab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    retain_freed_memory()  # training steps reuse their activations' memory (see vislab.allocator)
    try:
        distributed.init_from_env()  # one of several processes under torchrun; nothing otherwise
        return int(args.handler(args) or 0)
    except UserError as e:  # anything else is a bug and keeps its traceback (vislab.errors)
        print(f"vislab {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except Paused as e:  # a time / step limit was reached on purpose; the checkpoint is kept
        print(f"vislab {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"vislab {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
