# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Editing agent.properties (java.util.Properties syntax) without disturbing what is not ours.

A file is kept as its physical lines.  Setting a key rewrites only the line (or the
continued lines) of its last occurrence, which is the one Java reads; a key that is
not there yet is appended.  Comments, blank lines, order and unknown keys stay.
Standard library only: the module runs on hosts where the agent's own Python
package may live in a virtualenv the module cannot import from.
"""

from __future__ import annotations

import re

# Keys whose values are secrets: the file becomes 0600 and diffs hide the values.
SECRET_KEY = re.compile(r"pass|secret|token", re.IGNORECASE)
MASK = "********"

_SEPARATORS = "=: \t\f"
_WHITESPACE = " \t\f"
_CONTROL_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_CONTROL_CHARS = dict((char, "\\" + name) for name, char in _CONTROL_ESCAPES.items())


def _unescape(text):
    out = []
    index = 0
    while index < len(text):
        char = text[index]
        index += 1
        if char != "\\" or index >= len(text):
            out.append(char)
            continue
        escaped = text[index]
        index += 1
        if escaped == "u" and re.match(r"[0-9a-fA-F]{4}$", text[index:index + 4]):
            out.append(chr(int(text[index:index + 4], 16)))
            index += 4
        else:
            out.append(_CONTROL_ESCAPES.get(escaped, escaped))
    return "".join(out)


def _escape_key(key):
    return "".join("\\" + c if c in "\\=:#! " else _CONTROL_CHARS.get(c, c) for c in key)


def _escape_value(value):
    escaped = "".join("\\\\" if c == "\\" else _CONTROL_CHARS.get(c, c) for c in value)
    # Leading blanks would be read as part of the separator.
    return "\\" + escaped if escaped[:1] == " " else escaped


def _continued(line):
    """A line ending in an odd number of backslashes continues on the next one."""
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def _split(logical):
    """(key, value) of one logical line, separated the way Java separates them."""
    end = 0
    while end < len(logical) and logical[end] not in _SEPARATORS:
        end += 2 if logical[end] == "\\" else 1
    rest = logical[end:].lstrip(_WHITESPACE)
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(_WHITESPACE)
    return _unescape(logical[:end]), _unescape(rest)


def entries(lines):
    """(first line, last line, key, value) of every entry, in file order."""
    found = []
    index = 0
    while index < len(lines):
        first = index
        logical = lines[index].lstrip(_WHITESPACE)
        while _continued(logical) and index + 1 < len(lines):
            index += 1
            logical = logical[:-1] + lines[index].lstrip(_WHITESPACE)
        index += 1
        if logical and logical[0] not in "#!":
            found.append((first, index - 1) + _split(logical))
    return found


def read_values(text):
    """{key: value} of a file's text; the last occurrence of a key wins, as in Java."""
    return dict(entry[2:] for entry in entries((text or "").splitlines()))


def set_values(text, values):
    """`text` with each key of `values` set; keys already holding the value stay byte for byte."""
    lines = (text or "").splitlines()
    for key, value in values.items():
        current = [entry for entry in entries(lines) if entry[2] == key]
        line = "%s=%s" % (_escape_key(key), _escape_value(value))
        if not current:
            lines.append(line)
        elif current[-1][3] != value:
            first, last = current[-1][:2]
            lines[first:last + 1] = [line]
    return "\n".join(lines) + "\n" if lines else ""


def holds_secrets(text):
    return any(SECRET_KEY.search(key) for key in read_values(text))


def masked(text):
    """`text` with the values of secret-looking keys replaced, for diffs and logs."""
    lines = (text or "").splitlines()
    for first, last, key, value in reversed(entries(lines)):
        if SECRET_KEY.search(key) and value:
            lines[first:last + 1] = ["%s=%s" % (_escape_key(key), MASK)]
    return "\n".join(lines) + "\n" if lines else ""
