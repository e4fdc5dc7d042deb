"""The molecule scenarios: the whole cloud on this machine, built, rebuilt without
changes, verified through the API and torn down by `molecule test`; `default` also rolls
its hosts through maintenance (side_effect), `mariadb` checks that the teardown dropped
the engine's database and user, `ha` runs two management servers on a three-node Galera
cluster behind HAProxy (ports of its own, about three minutes).

They need root and the ports the local inventory uses (API 8080, agent channel 8250,
NFS 2049 and the portmapper on 127.0.0.1). The test suite's own NFS fixture uses 2049
too, so `make test` runs this file in a pytest session of its own, after the rest.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SCENARIOS = sorted(p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml"))
# converge + idempotence + side_effect + verify + destroy, with room for a cold pip cache
SCENARIO_TIMEOUT = 1500
LOCAL_PORTS = {8080: "the engine's API", 8250: "the agent channel", 2049: "NFS"}

pytestmark = [pytest.mark.slow]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _preconditions() -> str | None:
    if os.geteuid() != 0:
        return "the molecule scenarios configure this machine and need root"
    if shutil.which("molecule", path=str(VENV_BIN)) is None:
        return "molecule is not installed in %s (pip install -e '.[test]')" % VENV_BIN
    return None


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario, tmp_path):
    reason = _preconditions()
    if reason:
        pytest.skip(reason)
    busy = ["127.0.0.1:%d (%s)" % (port, what) for port, what in LOCAL_PORTS.items() if _listening(port)]
    if busy:
        pytest.fail("ports the local inventory needs are taken: %s; stop what holds them "
                    "(make cloud-down for a cloud left by `make cloud`)" % ", ".join(busy), pytrace=False)
    collections = REPO / ".ansible" / "collections" / "ansible_collections" / "stackwright"
    collections.mkdir(parents=True, exist_ok=True)
    link = collections / "cloudstack"
    if not link.exists():
        link.symlink_to("../../../..", target_is_directory=True)
    env = dict(
        os.environ,
        PATH="%s:%s" % (VENV_BIN, os.environ.get("PATH", "")),
        ANSIBLE_COLLECTIONS_PATH=str(REPO / ".ansible" / "collections"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        MOLECULE_NO_LOG="false",
        NO_COLOR="1",
    )
    for name in ("CLOUDSTACK_ENDPOINT", "CLOUDSTACK_KEY", "CLOUDSTACK_SECRET", "CLOUDSTACK_CONFIG"):
        env.pop(name, None)
    log = tmp_path / ("molecule-%s.log" % scenario)
    with open(log, "w") as output:
        try:
            run = subprocess.run([str(VENV_BIN / "molecule"), "test", "-s", scenario], cwd=REPO, env=env,
                                 stdout=output, stderr=subprocess.STDOUT, timeout=SCENARIO_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            # Whatever the converge left running must not outlive the test.
            subprocess.run([str(VENV_BIN / "molecule"), "destroy", "-s", scenario], cwd=REPO, env=env,
                           stdout=output, stderr=subprocess.STDOUT, timeout=600, check=False)
            pytest.fail("molecule test -s %s took longer than %d s; log: %s" % (scenario, SCENARIO_TIMEOUT, log),
                        pytrace=False)
    if run.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
        pytest.fail("molecule test -s %s failed (rc=%d); log: %s\n%s" % (scenario, run.returncode, log, tail),
                    pytrace=False)
