# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Reading and atomically replacing the configuration files the host-level modules own."""

from __future__ import annotations

import os
import tempfile

from ansible.module_utils.common.text.converters import to_bytes


def read_text(path):
    """The file's text, or None when it does not exist or cannot be read."""
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def write_atomically(module, path, content, mode=None):
    """Replace `path` with `content` in one rename, so readers never see half a file.

    With `mode` None an existing file keeps its mode and a new one gets 0644.  The
    directory is created when missing.
    """
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    if mode is None:
        mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(to_bytes(content))
        os.chmod(temp, mode)
        module.atomic_move(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
