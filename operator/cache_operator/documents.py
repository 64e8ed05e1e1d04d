"""Reading policy files safely: YAML that cannot make the reader (or what it
prints) grow without bound.

A policy file comes from whoever runs ``apply``/``validate`` (stdin, CI, a
pull request), so it is treated as hostile:

- **no aliases** (``*name``, ``<<: *name``): a 595-byte "billion laughs"
  document expands to billions of nodes through nested aliases, and every
  one of them would be validated and reported. Counting aliases does not
  bound that (nine aliases per level, nine levels, is 81 aliases and 9^9
  nodes), and a policy never needs them: every field is a short scalar or a
  list of tag templates. Anchors alone (``&name``) are harmless and allowed.
- **at most** :data:`MAX_DOCUMENT_BYTES` per file, read with a bound (a
  larger stdin is never read whole);
- **at most** :data:`MAX_DEPTH` levels of nesting (the composer recurses;
  a policy is three levels deep, a ``kind: List`` of them five).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any, Final

import yaml
from yaml.composer import ComposerError
from yaml.events import AliasEvent
from yaml.nodes import Node

MAX_DOCUMENT_BYTES: Final = 1024 * 1024
MAX_DEPTH: Final = 32


class DocumentError(ValueError):
    """A file that is not readable as policy YAML (the message says why)."""


class PolicyYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases and deep nesting while composing,
    before anything is expanded."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise ComposerError(
                None, None,
                f"aliases (*{event.anchor}) are not allowed in policy documents; "
                "write each value out", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None,
                                    f"nested deeper than {MAX_DEPTH} levels",
                                    self.peek_event().start_mark)  # type: ignore[no-untyped-call]
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _too_large(size: int) -> DocumentError:
    return DocumentError(f"larger than {MAX_DOCUMENT_BYTES // 1024} KiB "
                         f"({size} bytes or more); split it into several files")


def read_bounded(stream: IO[bytes]) -> str:
    """Read a whole policy file, but never more than the limit (plus one byte
    to tell that it is over)."""
    raw = stream.read(MAX_DOCUMENT_BYTES + 1)
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise _too_large(len(raw))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"not UTF-8 text (byte {exc.start})") from None


def load_all(text: str) -> Iterator[Any]:
    """The documents of a YAML text, under the limits above. Raises
    DocumentError with a readable message (``YAML: ...``)."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_DOCUMENT_BYTES:
        raise _too_large(size)
    loader = PolicyYamlLoader(text)
    try:
        while loader.check_data():  # type: ignore[no-untyped-call]
            yield loader.get_data()
    except yaml.YAMLError as exc:
        raise DocumentError(f"YAML: {exc}") from None
    finally:
        loader.dispose()
