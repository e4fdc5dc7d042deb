"""Registrations that arrive together share a transaction; each stands or falls on its own."""

import json
import subprocess
import sys
import time

from tests.support.hierarchy import new_cluster, new_pod, new_zone


def load(engine, cluster, count, prefix, duration=12):
    return subprocess.Popen(
        [sys.executable, "-m", "stackwright.simulation.agent", "--host", "127.0.0.1",
         "--port", str(engine.agent_port), "--count", str(count), "--ramp", "0.5", "--duration", str(duration),
         "--ca-dir", str(engine.workdir / "pki"), "--cluster", cluster, "--guid-prefix", prefix],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_refused_registration_does_not_undo_the_others(fresh_engine, unique):
    api = fresh_engine.client()
    cluster = new_cluster(api, new_pod(api, new_zone(api, unique, networktype="Advanced"), unique), unique)
    good = load(fresh_engine, cluster["id"], 40, "good-" + unique)
    bad = load(fresh_engine, "no-such-cluster-" + unique, 10, "bad-" + unique)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if api.listHosts(clusterid=cluster["id"], state="Up").get("count", 0) == 40:
            break
        time.sleep(0.5)
    out_good, _err = good.communicate(timeout=60)
    _out_bad, err_bad = bad.communicate(timeout=60)
    hosts = api.listHosts(clusterid=cluster["id"])["host"]
    assert len(hosts) == 40 and {h["state"] for h in hosts} <= {"Up", "Disconnected"}
    assert json.loads(out_good.strip().splitlines()[-1])["registered"] == 40
    assert "refused registration" in err_bad and "no-such-cluster-" + unique in err_bad
    assert not [h for h in api.listHosts(hypervisor="Simulator").get("host", []) if h["name"].startswith("bad-")]
    log = fresh_engine.log_file.read_text()
    assert "Traceback" not in log
