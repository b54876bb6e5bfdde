"""Reading YAML that a user (or an attacker) wrote: safe, bounded, and with the line of every key.

``read_yaml(path)`` is the one YAML reader of ``--config`` files and experiment files:

* ``yaml.SafeLoader`` only: tags that would build Python objects are refused;
* the file must be UTF-8 and at most ``MAX_BYTES``; a document whose aliases would expand to more than
  ``MAX_NODES`` nodes (a "billion laughs" alias bomb) is refused before anything walks it;
* a key repeated in one mapping is an error naming both lines (YAML would silently keep the last);
* every key and list item is located: ``doc.line(("train", "lr"))`` is the line to cite in an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tickets.errors import TicketsError

MAX_BYTES = 2_000_000
MAX_NODES = 200_000


@dataclass
class YamlDocument:
    """A parsed document plus the line (1-based) of every key / list item, addressed by path tuples."""

    path: Path
    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)

    def line(self, path: tuple) -> int:
        """The line of ``path``, or of its nearest ancestor the file spells out (1 for the document)."""
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: tuple, message: str) -> TicketsError:
        """A TicketsError ``<file>:<line>: <message>``."""
        return TicketsError(f"{self.path}:{self.line(path)}: {message}")


def _expanded_size(node: yaml.Node, memo: dict[int, int], stack: set[int]) -> int:
    """Nodes in ``node`` with every alias expanded, computed in linear time (aliases share node objects)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in stack:  # a recursive alias (&a [*a]): infinite when expanded
        return MAX_NODES + 1
    stack.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            size += _expanded_size(child, memo, stack)
            if size > MAX_NODES:
                break
    elif isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            size += _expanded_size(k, memo, stack) + _expanded_size(v, memo, stack)
            if size > MAX_NODES:
                break
    stack.discard(key)
    memo[key] = size
    return size


def _walk(doc: YamlDocument, node: yaml.Node, path: tuple) -> None:
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None and key in seen:
                raise TicketsError(f"{doc.path}:{line}: key {key!r} appears twice (also line {seen[key]}): keep one")
            if key is not None:
                seen[key] = line
                doc.lines[path + (key,)] = line
            _walk(doc, value_node, path + (key,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(doc, item, path + (i,))


def parse_yaml(text: str, path: str | Path = "<string>") -> YamlDocument:
    """Parse YAML ``text`` (see the module doc for the checks); TicketsError with ``file:line`` on any problem."""
    path = Path(path)
    if len(text) > MAX_BYTES:
        raise TicketsError(f"{path} is {len(text)} characters, more than the {MAX_BYTES} a config may have: "
                           "split it or remove generated content")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _syntax_error(path, exc) from None
    doc = YamlDocument(path, None)
    if node is None:
        doc.data = {}
        return doc
    if _expanded_size(node, {}, set()) > MAX_NODES:
        raise TicketsError(f"{path}: its YAML aliases (&anchor / *alias) expand to more than {MAX_NODES} nodes: "
                           "write the values out instead of nesting aliases")
    _walk(doc, node, ())
    try:
        doc.data = yaml.SafeLoader(text).get_single_data()
    except yaml.YAMLError as exc:  # e.g. an unknown tag such as !!python/object
        raise _syntax_error(path, exc) from None
    except (ValueError, TypeError, RecursionError) as exc:  # unhashable keys, absurd nesting
        raise TicketsError(f"{path}: not a usable YAML document ({type(exc).__name__}: {exc}): fix the file") from None
    return doc


def read_yaml(path: str | Path, *, what: str = "config file") -> YamlDocument:
    """Read and parse a YAML file: TicketsError when it is missing, unreadable, not UTF-8 or not valid YAML."""
    p = Path(path)
    if p.is_dir():
        found = sorted(q.name for q in p.glob("*.y*ml"))[:3]
        raise TicketsError(f"{what} {str(p)!r} is a directory: pass a YAML file"
                           + (f" in it ({', '.join(found)})" if found else ""))
    if not p.is_file():
        raise TicketsError(f"{what} {str(p)!r} not found: check the path")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise TicketsError(f"cannot read {what} {p} ({exc.strerror or exc}): check its permissions") from None
    if len(raw) > MAX_BYTES:
        raise TicketsError(f"{what} {p} is {len(raw)} bytes, more than the {MAX_BYTES} a config may have: "
                           "split it or remove generated content")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TicketsError(f"{what} {p} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    return parse_yaml(text, p)


def _syntax_error(path: Path, exc: yaml.YAMLError) -> TicketsError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}" if mark else str(path)
    problem = getattr(exc, "problem", None) or "syntax error"
    return TicketsError(f"{where}: not valid YAML ({problem}): fix the syntax")
