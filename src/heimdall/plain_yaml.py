"""YAML from outside (scenario files, scenarios inside stores and models, training configurations): plain
data only, bounded before it can grow.

PyYAML's safe loader still expands aliases (a few KB of anchors can become gigabytes), converts integers
of any length and recurses once per nesting level. Here aliases are refused, the text, the nesting and
every integer are bounded, and every problem is one `error` naming `origin`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from heimdall.errors import HeimdallError

MAX_NESTING = 32
MAX_INTEGER_DIGITS = 30


class _PlainLoader(yaml.SafeLoader):
    """yaml.SafeLoader without aliases, deep nesting or huge integers."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed", self.peek_event().start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_NESTING} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INTEGER_DIGITS:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"an integer of {len(node.value)} characters (at most {MAX_INTEGER_DIGITS})",
                node.start_mark,
            )
        return super().construct_yaml_int(node)


_PlainLoader.add_constructor("tag:yaml.org,2002:int", _PlainLoader.construct_yaml_int)


def load_plain_yaml(text: Any, origin: str, error: type[HeimdallError], max_chars: int) -> Any:
    """Parse YAML `text` (at most `max_chars` characters) into plain data; raises `error` naming `origin`."""
    if not isinstance(text, str):
        raise error(f"{origin}: expected YAML text, got {type(text).__name__}")
    if len(text) > max_chars:
        raise error(f"{origin}: {len(text)} characters of YAML; at most {max_chars} are read")
    try:
        return yaml.load(text, Loader=_PlainLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise error(f"{origin}: not valid YAML: {exc}") from None


def read_bounded_text(path: Path, error: type[HeimdallError], max_chars: int) -> str:
    """The UTF-8 text of a file of at most `max_chars` characters; a larger file is refused before it is read."""
    try:
        size = path.stat().st_size
        if size > 4 * max_chars:  # UTF-8: at most 4 bytes a character
            raise error(f"{path}: {size} bytes; at most {max_chars} characters are read")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
