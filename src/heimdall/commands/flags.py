"""Command-line flags: written by hand (`add_flag`) or generated from a configuration dataclass's fields
(`add_fields`: help, flag name and value parser from each field's metadata, heimdall.option_field), and read back
into that dataclass (`from_args`).

Flags are spelled with dashes; the underscore spelling and a field's older names are aliases --help does not show.
Types give the parser: int, float, str, `X | None` (default None), bool (`--x/--no-x`), `Literal[...]` (choices),
tuples (one value per item, unless the field names a parser).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Literal, Union

SUPPRESS = argparse.SUPPRESS


def dashed(name: str) -> str:
    """The long flag of field `name`: `--` and the name with dashes."""
    return "--" + name.replace("_", "-")


def add_flag(
    p: argparse._ActionsContainer, name: str, *hidden: str, short: str | None = None, **kwargs: Any
) -> argparse.Action:
    """Add the flag `name` (dashes; and `short`) with its underscore spelling and `hidden` as aliases --help does not
    show; the action of `name`."""
    dest = kwargs.pop("dest", name.lstrip("-").replace("-", "_"))
    action = p.add_argument(*([short] if short else []), name, dest=dest, **kwargs)
    aliases = [a for a in dict.fromkeys(("--" + name.lstrip("-").replace("-", "_"), *hidden)) if a != name]
    if aliases:
        quiet = {k: v for k, v in kwargs.items() if k not in ("help", "required", "default", "metavar")}
        if kwargs.get("action") is argparse.BooleanOptionalAction:  # the aliases only say yes
            quiet |= {"action": "store_const", "const": True}
        p.add_argument(*aliases, dest=dest, help=SUPPRESS, default=SUPPRESS, **quiet)
    return action


def add_fields(
    p: argparse._ActionsContainer,
    cls: type,
    *,
    exclude: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
    suppress_defaults: bool = False,
) -> None:
    """Add a flag for each field of dataclass `cls` (`only` those, less `exclude`); its dest is the field's name.
    suppress_defaults: a flag not given leaves no attribute (the caller applies only what was given)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in exclude or (only is not None and field.name not in only) or not field.metadata.get("help"):
            continue
        kwargs = _argparse_kwargs(field, hints[field.name])
        default = field.default
        flag = field.metadata.get("flag") or dashed(field.name)
        if kwargs.get("action") is argparse.BooleanOptionalAction:
            _add_negative_alias(p, flag, field.name)
        if "choices" not in kwargs and "action" not in kwargs:
            kwargs.setdefault("metavar", flag[2:].replace("-", "_").upper())
        kwargs["help"] = _help(field, default).replace("%", "%%")
        kwargs["default"] = SUPPRESS if suppress_defaults else default
        add_flag(
            p, flag, *field.metadata.get("aliases", ()), short=field.metadata.get("short"), dest=field.name, **kwargs
        )


def from_args(cls: type, args: argparse.Namespace, **changes: Any) -> Any:
    """An instance of dataclass `cls` from the flags `add_fields` added (fields without a flag keep their default),
    with `changes` applied."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}  # nargs gives lists
    return cls(**(given | changes))


def _argparse_kwargs(field: dataclasses.Field, kind: Any) -> dict[str, Any]:
    meta = field.metadata
    kind = _without_none(kind)
    kwargs: dict[str, Any] = {k: meta[k] for k in ("choices", "metavar") if k in meta}
    if "parse" in meta:
        kwargs["type"] = meta["parse"]
    elif kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(kind) is Literal:
        values = typing.get_args(kind)
        kwargs |= {"choices": kwargs.get("choices", values), "type": type(values[0])}
    elif typing.get_origin(kind) is tuple:
        items = typing.get_args(kind)
        kwargs |= {"type": items[0], "nargs": "+" if items[-1] is Ellipsis else len(items)}
    elif kind in (int, float, str):
        kwargs["type"] = kind
    else:
        raise TypeError(f"{field.name}: no flag for a field of type {kind}; give option(parse=…)")
    return kwargs


def _without_none(kind: Any) -> Any:
    """X of `X | None`."""
    if typing.get_origin(kind) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return kind


def _help(field: dataclasses.Field, default: Any) -> str:
    text = field.metadata.get("default_text")
    if text is None:
        if default is None or isinstance(default, bool):
            return field.metadata["help"]
        text = _shown(default)
    return f"{field.metadata['help']} (default {text})" if text else field.metadata["help"]


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(_shown(v) for v in value)
    return str(value)


def _add_negative_alias(p: argparse._ActionsContainer, flag: str, dest: str) -> None:
    """`--no_x` beside BooleanOptionalAction's `--no-x` (the underscore spelling of the negative flag)."""
    negative = "--no_" + flag[2:].replace("-", "_")
    if negative != "--no-" + flag[2:]:
        p.add_argument(negative, dest=dest, action="store_const", const=False, default=SUPPRESS, help=SUPPRESS)
