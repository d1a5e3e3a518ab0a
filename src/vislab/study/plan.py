"""Plan a study: the chosen questions -> the roles they name -> one run spec per role (and seed).

A run is identified by its resolved config: the command's config dataclass built from the role's
options (defaults filled in), without the output bookkeeping, plus vislab's version. Its folder is
``runs/<command>-<12 hex of that hash>``: a rerun, a wider study or another profile that needs the
same run finds it finished and reuses it.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shlex
from typing import Any

from .. import __version__
from ..config import COMMANDS, build_config, config_to_dict
from ..errors import UserError

# where a run's output goes and how its work is executed: not part of what the run is
_BOOKKEEPING = ("out", "overwrite", "resume", "executor", "address", "cpus_per_task")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    role: str
    command: str
    options: dict[str, Any]  # resolved option values (no @placeholders), without the bookkeeping
    seed: int
    # torch CPU threads the run computes with, when the profile fixes it: float sums depend on the
    # thread count, so it is part of what the run is (None: whatever the executor gives, not in the key)
    threads: int | None = None

    @functools.cached_property  # derived from the frozen fields; folder/key are read many times
    def config(self) -> dict[str, Any]:
        """The command's full resolved config (defaults included) for these options, as plain JSON."""
        cfg_cls, _ = command(self.command)
        values = config_to_dict(build_config(cfg_cls, {**self.options, "seed": self.seed}))
        return {k: v for k, v in values.items() if k not in _BOOKKEEPING}

    @functools.cached_property
    def key(self) -> str:
        identity = {"command": self.command, "config": self.config, "vislab": __version__}
        if self.threads is not None:
            identity["threads"] = self.threads
        blob = json.dumps(identity, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def folder(self) -> str:
        """The run folder, relative to the study folder (no spaces: ``gan compare`` -> ``gan-compare-...``)."""
        return f"runs/{self.command.replace(' ', '-')}-{self.key[:12]}"

    def command_line(self, study_dir: str = "OUT") -> str:
        """The shell command that makes this run by hand (with the thread count it computes with)."""
        args = ["vislab", self.command]
        for k, v in {**self.options, "seed": self.seed}.items():
            flag = "--" + k.replace("_", "-")
            if isinstance(v, bool):
                args.append(flag if v else "--no-" + k.replace("_", "-"))
            elif isinstance(v, (list, tuple)):
                args += [flag, *map(str, v)]
            elif v is not None:
                args += [flag, str(v)]
        args += ["--out", f"{study_dir}/{self.folder}"]
        # torch takes its thread count from $OMP_NUM_THREADS when it starts
        return (f"OMP_NUM_THREADS={self.threads} " if self.threads else "") + shlex.join(args)


def command(name: str) -> tuple[type, Any]:
    """(config class, run function) of ``vislab NAME``."""
    if not COMMANDS:
        from ..cli import build_parser

        build_parser()  # imports every command module, which registers its command
    if name not in COMMANDS:
        raise UserError(f"study profile: unknown command {name!r}; known: {', '.join(sorted(COMMANDS))}")
    return COMMANDS[name]


def select_questions(wanted: list[str] | None, known: list[str]) -> list[str]:
    """Question ids from ``--questions`` items: an id (``C4``) or a part letter (``B``); None = all."""
    if not wanted:
        return list(known)
    chosen: list[str] = []
    for item in wanted:
        item = item.strip().upper()
        match = [q for q in known if q == item or (len(item) == 1 and q.startswith(item))]
        if not match:
            raise UserError(f"--questions {item}: no such question or part; use ids like A1 ... D8 or parts A B C D")
        chosen += [q for q in match if q not in chosen]
    return [q for q in known if q in chosen]


def placeholders(value: Any) -> set[str]:
    """The ``@name`` data placeholders used in an option value (a dict, list or string), without the ``@``."""
    if isinstance(value, dict):
        return set().union(*map(placeholders, value.values()))
    if isinstance(value, list):
        return set().union(*map(placeholders, value))
    return {value[1:]} if isinstance(value, str) and value.startswith("@") else set()


def resolve_value(value: Any, data: dict[str, Any]) -> Any:
    """Replace ``@name`` placeholders (also inside lists) with the study's data locations."""
    if isinstance(value, list):
        out: list[Any] = []
        for v in value:
            r = resolve_value(v, data)
            out += r if isinstance(r, list) and isinstance(v, str) and v.startswith("@") else [r]
        return out
    if isinstance(value, str) and value.startswith("@"):
        if value[1:] not in data:
            raise UserError(f"study profile: unknown data {value}; known: {', '.join('@' + k for k in data)}")
        return data[value[1:]]  # None: the option is left unset (the command's own default)
    return value


def plan_runs(roles_needed: list[str], profile: dict[str, Any], data: dict[str, Any], seeds: int,
              device: str = "auto") -> tuple[dict[str, list[RunSpec]], dict[str, str]]:
    """Run specs per role, and for roles that cannot run, why (missing data or role). Every run
    gets ``device`` unless its role sets one, and the profile's ``threads`` (if any)."""
    threads = profile.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise UserError(f"study profile: threads: {threads!r}; give a whole number >= 1 (torch threads per run) "
                        "or leave it out")
    specs: dict[str, list[RunSpec]] = {}
    problems: dict[str, str] = {}
    for role in roles_needed:
        spec = profile["roles"].get(role)
        if spec is None:
            problems[role] = f"the profile has no role {role!r}"
            continue
        try:
            options = {k: resolve_value(v, data) for k, v in (spec.get("options") or {}).items()}
            options = {k: v for k, v in options.items() if v is not None}
        except UserError as e:
            problems[role] = str(e)
            continue
        try:
            fields = {f.name for f in dataclasses.fields(command(spec["command"])[0])}
        except UserError as e:
            problems[role] = str(e)
            continue
        if "device" in fields:
            options.setdefault("device", device)
        seed_list = list(range(seeds)) if spec.get("seeded") else [int(options.pop("seed", 0))]
        options.pop("seed", None)
        runs = [RunSpec(role, spec["command"], options, s, threads) for s in seed_list]
        try:  # build the configs now: a bad option is reported with its role, before anything runs
            [r.config for r in runs]  # noqa: B018
        except (UserError, ValueError) as e:
            problems[role] = f"bad options in the profile: {e}"
            continue
        specs[role] = runs
    return specs, problems
