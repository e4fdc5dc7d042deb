"""Java-style `.properties` files (key=value, # comments), as CloudStack's tools use them.

Reading keeps the order of keys; writing replaces values in place, keeps comments and
unknown keys, and goes through a temporary file beside the target so a crash never leaves
a half-written file.
"""

import os
import tempfile


def parse(text):
    values = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#!":
            continue
        sep = min((i for i in (stripped.find("="), stripped.find(":")) if i >= 0), default=-1)
        if sep < 0:
            values[stripped] = ""
            continue
        values[stripped[:sep].strip()] = stripped[sep + 1:].strip()
    return values


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return parse(f.read())
    except FileNotFoundError:
        return {}


def render(original_text, updates):
    """`original_text` with `updates` applied: values replaced in place, new keys appended."""
    pending = dict(updates)
    out = []
    for line in original_text.splitlines():
        stripped = line.strip()
        if stripped and stripped[0] not in "#!":
            key = stripped.split("=", 1)[0].strip()
            if key in pending:
                value = pending.pop(key)
                if value is None:
                    continue
                out.append("%s=%s" % (key, value))
                continue
        out.append(line)
    for key, value in pending.items():
        if value is not None:
            out.append("%s=%s" % (key, value))
    return "\n".join(out) + "\n"


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
