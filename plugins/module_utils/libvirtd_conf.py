# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Edits of ``key = value`` files that keep everything the edit is not about.

Two dialects share the same rules: libvirt's configuration files (``listen_tcp = 1``,
strings in double quotes) and shell variable files such as ``/etc/default/libvirtd``
(``LIBVIRTD_ARGS="--listen"``).  A setting already at the wanted value is left byte for
byte; a different value is rewritten on its own line; a missing setting goes right
after its commented-out example (``#listen_tcp = 1``) when the file has one, else at
the end; a removed setting loses its active lines only, so a file the edits started
from comes back byte for byte.  Comments, blank lines and other settings never move.
"""

from __future__ import annotations

import re
import shlex


class ConfError(Exception):
    """A value that cannot be written safely into the file."""


class Dialect(object):
    """How one kind of file writes ``key = value``: only the separator differs."""

    def __init__(self, separator):
        self.separator = separator

    def active(self, key):
        return re.compile(r"^(?P<indent>\s*)%s\s*=\s*(?P<value>.*?)\s*$" % re.escape(key))

    def example(self, key):
        return re.compile(r"^\s*#\s*%s\s*=" % re.escape(key))

    def line(self, key, value):
        return "%s%s%s" % (key, self.separator, self.render(value))

    def render(self, value):
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, int):
            return str(value)
        text = str(value)
        if '"' in text or "\\" in text or "\n" in text or "$" in text or "`" in text:
            raise ConfError("value %r contains a quote, backslash, '$', '`' or newline" % text)
        return '"%s"' % text


LIBVIRT = Dialect(" = ")
SHELL = Dialect("=")


def parse_value(raw):
    """The value of a setting as its program reads it: quotes removed, trailing comment dropped."""
    raw = raw.strip()
    if raw.startswith('"'):
        end = raw.find('"', 1)
        return raw[1:end] if end > 0 else raw[1:]
    if raw.startswith("'"):
        end = raw.find("'", 1)
        return raw[1:end] if end > 0 else raw[1:]
    return raw.split("#", 1)[0].strip()


def current_values(text, keys, dialect=LIBVIRT):
    """``{key: value}`` for the keys set (not commented out) in `text`; the last one wins."""
    found = {}
    for line in text.splitlines():
        for key in keys:
            match = dialect.active(key).match(line)
            if match:
                found[key] = parse_value(match.group("value"))
    return found


def set_values(text, wanted, dialect=LIBVIRT):
    """`text` with every ``key: value`` of `wanted` in force (None values are left alone)."""
    lines = text.splitlines()
    for key, value in wanted.items():
        if value is None:
            continue
        rendered = dialect.render(value)
        wanted_plain = parse_value(rendered)
        pattern = dialect.active(key)
        hits = [i for i, line in enumerate(lines) if pattern.match(line)]
        if hits:
            for index in hits:
                match = pattern.match(lines[index])
                if parse_value(match.group("value")) != wanted_plain:
                    lines[index] = match.group("indent") + dialect.line(key, value)
            continue
        examples = [i for i, line in enumerate(lines) if dialect.example(key).match(line)]
        if examples:
            lines.insert(examples[0] + 1, dialect.line(key, value))
        else:
            lines.append(dialect.line(key, value))
    return "\n".join(lines) + "\n" if lines else ""


def remove_values(text, keys, dialect=LIBVIRT):
    """`text` without the active settings of `keys`; their commented-out examples stay."""
    patterns = [dialect.active(key) for key in keys]
    lines = [line for line in text.splitlines() if not any(p.match(line) for p in patterns)]
    return "\n".join(lines) + "\n" if lines else ""


def shell_words(value):
    """The words of a shell variable's value, e.g. LIBVIRTD_ARGS."""
    try:
        return shlex.split(value or "")
    except ValueError as exc:
        raise ConfError("cannot read %r as shell words: %s" % (value, exc)) from exc
