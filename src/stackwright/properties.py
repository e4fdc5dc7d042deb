"""Java `.properties` files, read and edited the way `java.util.Properties` reads them.

One parser serves the engine's server.properties and the agent's agent.properties:
`#`/`!` comments, `key=value`, `key: value` or `key value`, backslash escapes (`\\:`,
`\\=`, `\\t`, `\\uXXXX`, ...) and lines continued by an odd number of trailing backslashes.
`PropertiesFile` keeps a file as lines, so comments, order and unknown keys survive edits;
`write_atomic` goes through a temporary file beside the target so a crash never leaves a
half-written file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_CONTROL = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}
_WHITESPACE = " \t\f"


def unescape(text: str) -> str:
    out, chars = [], iter(text)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        nxt = next(chars, "")
        if nxt == "u":
            code = "".join(next(chars, "") for _digit in range(4))
            try:
                out.append(chr(int(code, 16)))
            except ValueError:
                out.append("\\u" + code)
        else:
            out.append(_ESCAPES.get(nxt, nxt))
    return "".join(out)


def escape(text: str, is_key: bool) -> str:
    out = []
    for index, char in enumerate(text):
        if char == "\\":
            out.append("\\\\")
        elif char in _CONTROL:
            out.append(_CONTROL[char])
        elif char in "=:#!" and is_key:
            out.append("\\" + char)
        elif char == " " and (is_key or index == 0):
            out.append("\\ ")
        else:
            out.append(char)
    return "".join(out)


def entry_line(key: str, value: str) -> str:
    """The line `key=value` with both sides escaped so `parse` reads them back unchanged."""
    return "%s=%s" % (escape(key, True), escape(value, False))


def split_entry(logical: str) -> tuple[str, str]:
    """Key and value of one logical line: the key ends at the first unescaped `=`, `:` or blank."""
    index = 0
    while index < len(logical):
        char = logical[index]
        if char == "\\":
            index += 2
            continue
        if char in "=:" or char in _WHITESPACE:
            break
        index += 1
    rest = logical[index:].lstrip(_WHITESPACE)
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(_WHITESPACE)
    return unescape(logical[:index]), unescape(rest)


def _continues(line: str) -> bool:
    trailing = len(line) - len(line.rstrip("\\"))
    return trailing % 2 == 1


def entries(lines: list[str]) -> list[tuple[int, int, str, str]]:
    """(first line, last line, key, value) of each entry, continuation lines joined."""
    found, index = [], 0
    while index < len(lines):
        start = index
        logical = lines[index].lstrip(_WHITESPACE)
        while _continues(logical) and index + 1 < len(lines):
            index += 1
            logical = logical[:-1] + lines[index].lstrip(_WHITESPACE)
        if _continues(logical):
            logical = logical[:-1]  # a backslash on the last line continues into nothing
        index += 1
        if not logical or logical[0] in "#!":
            continue
        key, value = split_entry(logical)
        found.append((start, index - 1, key, value))
    return found


def parse(text: str) -> dict[str, str]:
    """Keys and values of properties text, in file order; a repeated key keeps its last value."""
    return {key: value for _first, _last, key, value in entries(text.splitlines())}


def read(path) -> dict[str, str]:
    """`parse` of the file at `path`; a missing file has no keys."""
    try:
        with open(path, encoding="utf-8") as f:
            return parse(f.read())
    except FileNotFoundError:
        return {}


class PropertiesFile:
    """A properties file kept as lines, so comments, order and unknown keys survive edits."""

    def __init__(self, path: Path | str, lines: list[str]):
        self.path = Path(path)
        self.lines = lines

    @classmethod
    def read(cls, path: Path | str):
        """The file at `path`; a missing file is an empty one."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path, [])
        return cls(path, text.splitlines())

    def as_dict(self) -> dict[str, str]:
        return {key: value for _first, _last, key, value in entries(self.lines)}

    def set(self, key: str, value: str) -> bool:
        """Set `key`; True when the content changes. The last occurrence wins, as in Java."""
        line = entry_line(key, value)
        matches = [entry for entry in entries(self.lines) if entry[2] == key]
        if not matches:
            self.lines.append(line)
            return True
        first, last, _key, current = matches[-1]
        if current == value:
            return False
        self.lines[first:last + 1] = [line]
        return True

    def render(self) -> str:
        return "\n".join(self.lines) + "\n" if self.lines else ""


def write_atomic(path, text, mode=0o600):
    """Write `text` to `path` through a temporary file in the same directory."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
