#!/usr/bin/env bash
# Run `ansible-test sanity` on the collection without network access to ansible's CI files.
#
# ansible-test wants the collection at .../ansible_collections/NAMESPACE/NAME and reads the
# file list from git, so the tracked and new (not ignored) files are copied to a scratch
# tree of that shape, which gets a throw-away git index. The working tree is not touched.
# Arguments go to ansible-test, e.g. scripts/sanity.sh --test pep8 --test pylint
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(cd "${VENV:-$repo/.venv}" && pwd)
python_version=${SANITY_PYTHON:-3.11}

# ansible-test bootstraps pip into its virtual environments with get-pip.py, downloaded
# once and cached under the name of the pip version it pins; the offline stand-in goes there.
pip_version=$("$venv/bin/python" - "$python_version" <<'PY'
import sys
import types

from ansible_test._internal.python_requirements import get_venv_packages

print(get_venv_packages(types.SimpleNamespace(version=sys.argv[1]))["pip"])
PY
)
get_pip=$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py
if [ ! -s "$get_pip" ]; then
    install -D -m 0644 "$repo/scripts/ansible-test-get-pip.py" "$get_pip"
    echo "installed the offline pip bootstrap for ansible-test as $get_pip"
fi

namespace=$(sed -n 's/^namespace: *//p' "$repo/galaxy.yml")
name=$(sed -n 's/^name: *//p' "$repo/galaxy.yml")
scratch=$(mktemp -d "${TMPDIR:-/tmp}/sanity.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
collection=$scratch/ansible_collections/$namespace/$name
mkdir -p "$collection"

# Tracked files deleted in the working tree are skipped; symlinks stay symlinks.
(cd "$repo" && git ls-files -z --cached --others --exclude-standard) |
    while IFS= read -r -d '' path; do
        if [ -e "$repo/$path" ] || [ -L "$repo/$path" ]; then
            printf '%s\0' "$path"
        fi
    done |
    (cd "$repo" && xargs -0 -r cp -P --parents -t "$collection")

cd "$collection"
git init -q
git add -A

status=0
"$venv/bin/ansible-test" sanity --local --python "$python_version" "$@" || status=$?
exit "$status"
