"""Study profiles: YAML files in this package (quick, full), optionally extended by a user's file.

A profile is data, not code::

    description: one line
    seeds: 1                       # default of --seeds: seeded roles run once per seed 0..N-1
    threads: 1                     # optional: torch threads of every run (part of each run's identity)
    roles:                         # role name -> one vislab command and its options
      inspect_vgg16:
        command: inspect
        options: {model: vgg16, weights: none}
        seeded: false              # true: one run per seed (mean +- std in the answers)
    notes: {A5: "a sentence shown with the answer"}

Option values may name study data with ``@``: ``@mnist`` (a folder of MNIST IDX files), ``@scenes``
(a train/ + test/ image folder), ``@backgrounds``, ``@photos`` (sample photos). A user's
``--config FILE`` is merged over the profile key by key (a role's options are merged too), so it can
change sizes, add roles or drop one (``role: null``).
"""
from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError

PROFILES = ("quick", "full")


def load_profile(name: str, user_file: str | Path | None = None) -> dict[str, Any]:
    if name not in PROFILES:
        raise UserError(f"--profile {name!r}: use one of {', '.join(PROFILES)}")
    text = resources.files(__package__).joinpath("profiles", f"{name}.yaml").read_text(encoding="utf-8")
    profile = yaml.safe_load(text)
    if user_file is not None:
        profile = merge(profile, _read_user_file(Path(user_file)))
    profile["roles"] = {k: v for k, v in profile.get("roles", {}).items() if v is not None}
    for role, spec in profile["roles"].items():
        if not isinstance(spec, dict) or "command" not in spec:
            raise UserError(f"study profile: role {role!r} needs a 'command' (and usually 'options')")
    profile["name"] = name
    return profile


def _read_user_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping (keys such as roles:, seeds:)")
    return data


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: dicts key by key (recursively), anything else replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out
