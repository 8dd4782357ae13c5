"""Command-line flags derived from the contract's specs: one flag per generation parameter and engine setting,
with the spec's type, choices and help. `generate`, `serve` and `resume` share them."""
from __future__ import annotations

import argparse

from .contract import ENGINE_SETTINGS, PARAMS, RESOLUTION_PRESETS, EngineSettings, GenerationParams, Spec


def _resolution(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must look like 512x512, not {text!r}") from None
    return w, h


def _help(spec: Spec) -> str:
    default = spec.default
    shown = "" if default is None or isinstance(default, bool) or len(str(default)) > 30 else f" (default: {default})"
    return spec.help.replace("%", "%%") + shown


def add_spec(group, spec: Spec) -> None:
    """One flag for `spec`. Its default is None (= not given), so the contract's default and validation apply."""
    kw = {"dest": spec.name, "default": None, "help": _help(spec)}
    if spec.type is bool:
        group.add_argument(spec.flag, action=argparse.BooleanOptionalAction, **kw)
        return
    if spec.choices:
        kw["choices"] = spec.choices
    group.add_argument(spec.flag, type=spec.type, metavar=None if spec.choices else spec.name.upper(), **kw)


def add_generation_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation")
    g.add_argument("--resolution", type=_resolution, metavar="WxH",
                   help=f"preset or any multiple of 16 ({', '.join(RESOLUTION_PRESETS)}); overrides --width/--height")
    for spec in PARAMS.values():
        add_spec(g, spec)


def params_from_args(args) -> GenerationParams:
    """The generation parameters given on the command line, validated by the contract (ContractError)."""
    given = {name: getattr(args, name) for name in PARAMS if getattr(args, name, None) is not None}
    if getattr(args, "resolution", None):
        given["width"], given["height"] = args.resolution
    return GenerationParams.from_dict(given)


def add_engine_args(p: argparse.ArgumentParser, note: str = "") -> None:
    r = p.add_argument_group("engine" + (f" ({note})" if note else ""))
    for spec in ENGINE_SETTINGS.values():
        add_spec(r, spec)


def engine_settings_from_args(args) -> EngineSettings:
    return EngineSettings(**{name: getattr(args, name, None) for name in ENGINE_SETTINGS}).validate()
