"""Reading untrusted JSON and YAML with bounds: size, nesting, integer length, no YAML aliases.

Why: a policy file or a space is input from anywhere, and the parsers alone let it demand unbounded
work before any of augsearch's checks run: ``json.loads`` recurses once per ``[`` (a deep file ends
in ``RecursionError``), Python refuses to turn an integer of more than 4,300 digits into ``int``
with a ``ValueError`` (and smaller ones still make huge messages), and YAML aliases let a kilobyte
expand to billions of nodes ("billion laughs"). Nothing augsearch writes is near these bounds: its
files are a few kilobytes, nest under ten levels, hold integers of a few digits and use no aliases.
Each refusal is one :class:`UserError` line naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from augsearch.errors import UserError

MAX_FILE_BYTES = 1 << 20  # 1 MiB: a policy file or a space is a few KiB
MAX_NESTING = 64  # levels of lists and mappings
MAX_DIGITS = 40  # characters of an integer literal


class _Refused(Exception):
    """Raised inside a parser's hook; turned into a UserError with the file's name."""


def read_bounded(path: Path) -> bytes:
    """The file's bytes, refused past :data:`MAX_FILE_BYTES` (without reading more than that)."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise UserError(f"{path}: larger than {MAX_FILE_BYTES} bytes; augsearch's files are a few KiB")
    return data


def _json_int(text: str) -> int:
    if len(text) > MAX_DIGITS:
        raise _Refused(f"an integer of {len(text)} characters; expected at most {MAX_DIGITS}")
    return int(text)


def _nesting(value: Any) -> int:
    """How many levels of lists and mappings ``value`` has, found without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json(text: str, path: Path) -> Any:
    """``json.loads`` with the bounds above; a malformed file is a ``json.JSONDecodeError`` as before.

    The C parser raises ``RecursionError`` past about a thousand levels (at once, without a crash);
    anything shallower is measured after parsing.
    """
    try:
        document = json.loads(text, parse_int=_json_int)
    except (_Refused, RecursionError, ValueError) as error:
        if isinstance(error, json.JSONDecodeError):
            raise
        reason = str(error) if isinstance(error, _Refused) else "nested too deep"
        raise UserError(f"{path}: refused ({reason[:200]})") from None
    nesting = _nesting(document)
    if nesting > MAX_NESTING:
        raise UserError(f"{path}: refused (nested {nesting} levels deep; expected at most {MAX_NESTING})")
    return document


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases, nesting past :data:`MAX_NESTING` and long integers."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._nesting = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise _Refused(f"line {mark.line + 1}: YAML aliases (*name) are not accepted in augsearch files")
        self._nesting += 1
        try:
            if self._nesting > MAX_NESTING:
                mark = self.peek_event().start_mark
                raise _Refused(f"line {mark.line + 1}: nested deeper than {MAX_NESTING} levels")
            return super().compose_node(parent, index)
        finally:
            self._nesting -= 1

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_DIGITS:
            raise _Refused(
                f"line {node.start_mark.line + 1}: an integer of {len(node.value)} characters; "
                f"expected at most {MAX_DIGITS}"
            )
        return super().construct_yaml_int(node)


BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)


def parse_yaml(data: bytes | str, path: Path) -> Any:
    """``yaml.load`` with :class:`BoundedLoader`; a ``yaml.YAMLError`` for malformed YAML as before."""
    try:
        return yaml.load(data, Loader=BoundedLoader)  # a SafeLoader subclass: no tags that run code
    except (_Refused, RecursionError, ValueError) as error:
        reason = str(error) if isinstance(error, _Refused) else type(error).__name__
        raise UserError(f"{path}: refused ({reason[:200]})") from None
