"""The contract between the Blender add-on and the backend: one package, standard library only (no torch, no bpy).

It is the one home of everything that crosses the process boundary:

* the protocol version, the line framing and the line limit;
* the model facts both sides compute with (25 fps, 16 kHz, resolution presets, parameter bounds);
* the generation parameters as specs (name, type, default, choices or range, help, CLI flag, panel group), from
  which the CLI flags (`cli_args.py`), `GenerationParams` and its validation (below), the add-on's panel
  properties (`ui/props.py`) and the tables of `docs/protocol.md` (`contract_doc.py`) are all derived;
* the engine settings (checkpoints, device, dtype, memory mode) shared by `generate`, `serve`, `resume` and the
  add-on's backend command line;
* every request and every event with its fields and JSON types, and the error categories with whose fault each is.

The backend imports it as `stableavatar.contract`; the add-on loads this same package (`blender_addon/contract.py`),
so the two sides cannot drift apart. facts.py: constants; values.py: specs and strict values; messages.py:
requests, events and framing; farm.py: the shot farm's SHOTS.json and lines; child.py: how one side starts
another process. Everything is importable from the package itself. Adding a parameter: see README "How to add a generation parameter".
"""
from __future__ import annotations

from .child import ChildProcess, clean_env, detached  # noqa: F401
from .facts import *  # noqa: F401,F403
from .farm import *  # noqa: F401,F403
from .messages import *  # noqa: F401,F403
from .values import *  # noqa: F401,F403
from .values import number_text  # noqa: F401  (used by contract_doc)
