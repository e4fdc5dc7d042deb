"""Fault: the MariaDB server stops under a steady API load and starts again.

While the database is away every request must get a CloudStack error envelope (530, "The
database is unavailable ...") within a bound: no hang, no traceback, no internal error.
Once it is back requests succeed again within a bound, from the same engine process,
nothing committed before the outage is lost, and every async job accepted before it ends
(a burst of jobs is queued just before the stop, so the outage finds some waiting).
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
import time
import uuid
from dataclasses import dataclass

import pytest
import requests

from bench.report import table
from tests.support.engine import EngineProcess
from tests.support.hierarchy import new_pod, new_zone

pytestmark = [pytest.mark.slow]

LOAD_THREADS = 4
PAUSE = 0.05                 # seconds between two requests of one load thread
OUTAGE_SECONDS = 8.0         # the database stays stopped this long
REQUEST_BOUND = 20.0         # no request may take longer, outage or not
CLIENT_TIMEOUT = 60.0        # the client gives up here; a request reaching it has hung
RECOVERY_BOUND = 60.0        # reads and writes succeed again within this after the restart
JOB_BOUND = 90.0             # jobs accepted before the outage are final within this after it
JOB_WORKERS = 1              # one job worker, so that jobs are still queued when the database stops
BURST = 200                  # async jobs queued just before the database stops
UNAVAILABLE = ("The database is unavailable", "The database became unavailable")


@dataclass
class Outcome:
    kind: str
    command: str
    started: float
    elapsed: float
    status: int | None
    inner: dict | None
    failure: str | None = None
    name: str | None = None

    @property
    def ok(self):
        return self.status == 200

    @property
    def unavailable(self):
        return (self.status == 530 and isinstance(self.inner, dict)
                and str(self.inner.get("errortext", "")).startswith(UNAVAILABLE))


def call(api, command, **params):
    """One signed request, whatever its status; returns (status, the body under its key)."""
    kind, request = api._prepare_request(command, **params)
    response = api._send(kind, request, api.headers, CLIENT_TIMEOUT)
    body = response.json()
    key = command.lower() + "response"
    assert list(body) == [key], body
    return response.status_code, body[key]


class Load:
    """A few threads sending reads, writes and async jobs until told to stop."""

    def __init__(self, engine, zone, networks, unique):
        self.engine = engine
        self.zone = zone
        self.networks = networks
        self.unique = unique
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self.threads = [threading.Thread(target=self.run, args=(n,), name="load-%d" % n) for n in range(LOAD_THREADS)]

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(CLIENT_TIMEOUT + 10)

    def run(self, number):
        api = self.engine.client()
        serial = 0
        while not self.stopping.is_set():
            serial += 1
            step = serial % 4
            if step == 0:
                self.send(api, "read", "listZones", name=self.zone["name"])
            elif step == 1:
                name = "load-%s-%d-%d" % (self.unique, number, serial)
                self.send(api, "write", "createPod", name=name, zoneid=self.zone["id"], gateway="10.%d.%d.1" % (
                    number, serial % 250), netmask="255.255.255.0", startip="10.%d.%d.10" % (number, serial % 250))
            elif step == 2:
                self.send(api, "job", "updatePhysicalNetwork", id=self.networks[number]["id"], vlan=str(serial))
            else:
                self.send(api, "read", "listPods", zoneid=self.zone["id"], keyword="load-%s-%d" % (self.unique, number))
            time.sleep(PAUSE)

    def send(self, api, kind, command, **params):
        started = time.monotonic()
        try:
            status, inner = call(api, command, **params)
            outcome = Outcome(kind, command, started, time.monotonic() - started, status, inner, name=params.get("name"))
        except (requests.RequestException, ValueError, AssertionError) as exc:
            outcome = Outcome(kind, command, started, time.monotonic() - started, None, None, failure=repr(exc))
        with self.lock:
            self.outcomes.append(outcome)

    def between(self, start, end):
        with self.lock:
            return [o for o in self.outcomes if start <= o.started and o.started + o.elapsed <= end]


def test_database_outage_under_load(mariadb_server, mariadb_database, tmp_path, record_reliability):
    if not mariadb_server.managed:
        pytest.skip("the MariaDB server is not started by the tests, so they may not stop it")
    unique = uuid.uuid4().hex[:6]
    engine = EngineProcess(tmp_path / "engine", mariadb_database.url, extra_args=["--job-workers", str(JOB_WORKERS)])
    load = None
    try:
        engine.start()
        api = engine.client()
        pid = engine.pid
        # Committed before the outage: a zone with pods and physical networks.
        zone = new_zone(api, unique, networktype="Advanced")
        pods = [new_pod(api, zone, unique, subnet="10.200.%d" % i) for i in range(5)]
        networks = [api.createPhysicalNetwork(zoneid=zone["id"], name="phy-%s-%d" % (unique, n),
                                              fetch_result=True)["physicalnetwork"] for n in range(LOAD_THREADS)]

        load = Load(engine, zone, networks, unique)
        load.start()
        time.sleep(3)
        burst = queue_burst(engine, networks)
        stop_begin = time.monotonic()
        mariadb_server.stop()
        stop_end = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        start_begin, start_wall = time.monotonic(), dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        mariadb_server.start()
        start_end = time.monotonic()

        def recovered():
            after = [o for o in load.between(start_end, time.monotonic()) if o.ok]
            kinds = {o.kind for o in after}
            if {"read", "write"} <= kinds:
                return min(o.started + o.elapsed for o in after if o.kind == "write")
            return None

        deadline = time.monotonic() + RECOVERY_BOUND
        recovered_at = None
        while recovered_at is None and time.monotonic() < deadline:
            recovered_at = recovered()
            time.sleep(0.2)
        time.sleep(2)
        load.stop()
        assert recovered_at is not None, "no read and write succeeded within %ss of the database's restart:\n%s" % (
            RECOVERY_BOUND, summary(load.between(start_end, time.monotonic())))

        outcomes = load.outcomes
        # The engine always answered, in time, with an envelope: success or database unavailable.
        failures = [o for o in outcomes if o.failure is not None]
        assert not failures, failures[:3]
        slow = [o for o in outcomes if o.elapsed > REQUEST_BOUND]
        assert not slow, slow[:3]
        odd = [o for o in outcomes if not (o.ok or o.unavailable)]
        assert not odd, odd[:3]
        for o in outcomes:
            if o.unavailable:
                assert (o.inner["errorcode"], o.inner["cserrorcode"]) == (530, 4250), o
                assert "Traceback" not in o.inner["errortext"] and "Internal error" not in o.inner["errortext"]
        # With the database stopped nothing can be written, and the errors said why.
        down = load.between(stop_end, start_begin)
        assert [o for o in down if o.unavailable], "no request met the outage:\n%s" % summary(down)
        assert not [o for o in down if o.ok and o.kind != "read"], summary(down)
        assert engine.proc.poll() is None and engine.pid == pid

        # Nothing committed is lost: the setup, every write answered 200, every accepted job.
        api = engine.client()
        listed = {p["name"] for p in api.listPods(zoneid=zone["id"], fetch_list=True)}
        assert {p["name"] for p in pods} <= listed
        written = {o.name for o in outcomes if o.kind == "write" and o.ok}
        assert written <= listed, sorted(written - listed)[:5]
        # A write refused with "nothing was changed" changed nothing; one whose commit went out
        # unanswered is refused with "may or may not have been applied".
        refused = [o for o in outcomes if o.kind == "write" and o.unavailable]
        unchanged = {o.name for o in refused if "nothing was changed" in o.inner["errortext"]}
        assert not unchanged & listed, sorted(unchanged & listed)[:5]
        uncertain = [o for o in refused if "may or may not have been applied" in o.inner["errortext"]]
        assert len(unchanged) + len(uncertain) == len(refused), refused[:3]
        jobs = [o.inner["jobid"] for o in outcomes if o.kind == "job" and o.ok] + burst
        settled = {}

        def jobs_final():
            for jobid in jobs:
                if jobid not in settled:
                    job = api.queryAsyncJobResult(jobid=jobid)
                    if job["jobstatus"] != 0:
                        settled[jobid] = job
            return len(settled) == len(jobs)

        deadline = time.monotonic() + JOB_BOUND
        while not jobs_final() and time.monotonic() < deadline:
            time.sleep(1)
        pending = [jobid for jobid in jobs if jobid not in settled]
        assert not pending, "%d of %d accepted jobs still pending %ss after the outage, e.g. %s" % (
            len(pending), len(jobs), JOB_BOUND, pending[:3])
        failed = [job for job in settled.values() if job["jobstatus"] != 1]
        assert not failed, failed[:3]
        jobs_done = time.monotonic()
        # Nothing completes while the database is away: these jobs waited for it.
        waited = [jobid for jobid in burst if completed(settled[jobid]) >= start_wall]
        assert waited, "every job of the burst was final before the database stopped; nothing was tested"

        during = [o for o in outcomes if stop_begin <= o.started < start_end]
        rows = [
            ["load", "%d threads, reads, writes and async jobs, %.0f ms apart" % (LOAD_THREADS, PAUSE * 1000)],
            ["requests in all", len(outcomes)],
            ["time for MariaDB to stop / to start again", "%.1f s / %.1f s" % (stop_end - stop_begin,
                                                                               start_end - start_begin)],
            ["database away (stop begun to ready again)", "%.1f s" % (start_end - stop_begin)],
            ["requests while it was away", len(during)],
            ["of which answered 530 database unavailable", sum(1 for o in during if o.unavailable)],
            ["slowest answer while it was away", "%.0f ms" % (1000 * max((o.elapsed for o in during), default=0))],
            ["hung, not an envelope, or a traceback", 0],
            ["time to recover (database ready to first successful write)", "%.1f s" % (recovered_at - start_end)],
            ["job workers; jobs queued in a burst just before the stop", "%d; %d" % (JOB_WORKERS, BURST)],
            ["jobs that waited for the database", len(waited)],
            ["accepted jobs / final after the outage", "%d / %d (all %.1f s after the database was back)"
             % (len(jobs), len(settled), jobs_done - start_end)],
            ["writes answered 200 and lost", 0],
            ["writes refused: nothing changed / commit sent, outcome unknown (applied)", "%d / %d (%d)"
             % (len(unchanged), len(uncertain), sum(1 for o in uncertain if o.name in listed))],
            ["engine restarted", "no (same process)"],
        ]
        record_reliability("Database outage", "Database: MariaDB, stopped (SIGTERM) and started again on the "
                           "same port and data.\n\n" + table(["measure", "value"], rows))
    finally:
        if load is not None:
            load.stop()
        engine.kill()


def queue_burst(engine, networks):
    """BURST async jobs from a few threads at once; returns their ids."""
    jobids, lock = [], threading.Lock()

    def send(number):
        api = engine.client()
        for n in range(number, BURST, LOAD_THREADS):
            jobid = api.updatePhysicalNetwork(id=networks[number]["id"], tags="burst-%d" % n)["jobid"]
            with lock:
                jobids.append(jobid)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(LOAD_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(jobids) == BURST
    return jobids


def completed(job):
    return dt.datetime.strptime(job["completed"], "%Y-%m-%dT%H:%M:%S%z")


def summary(outcomes):
    counts = collections.Counter((o.kind, o.status, (o.inner or {}).get("errortext", o.failure or "")[:80])
                                 for o in outcomes)
    return "\n".join("%s %s %s x%d" % (k, s, t, n) for (k, s, t), n in counts.most_common(10))
