"""Several management servers on one database: who they are, who is alive, who serves what.

Each server (engine) has a row in `mshost` (CloudStack's table): it registers at start,
records a heartbeat every cluster.heartbeat.interval, and is found Down by a peer once its
heartbeat is older than cluster.heartbeat.threshold. What a server serves is recorded where
it is used: a host's `mgmt_server_id` names the server holding its agent (or running its
in-engine simulated agent), a job's `executing_msid` the server running it. A server only
ever changes what it serves itself; what a server found Down served is claimed by a
survivor, one row at a time with a conditional update, so two survivors never both take
the same job or host.

Time is the database clients' UTC clock (`utcnow`): the servers' clocks must agree to well
within the threshold (NTP), as CloudStack's do.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import platform
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, or_, select, update

from ..persistence.models import AsyncJob, Host, ManagementServer, utcnow
from .queries import NOCASE, ROW, Filter, filtered, page

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence
    from types import SimpleNamespace

    from sqlalchemy.orm import Session

    from ..context import Context
    from ..persistence.db import Database
    from .queries import Page

log = logging.getLogger(__name__)

VERSION = "0.1.0"
UP, DOWN = "Up", "Down"
# Host states whose agent was connected (or connecting) when its server last ran.
SERVED_STATES = ("Up", "Alert", "Disconnected", "Connecting")
# Host detail `agent` of a Simulator host whose simulated agent runs outside any engine.
EXTERNAL = "external"
PENDING = 0


# The servers that are Up, as a subquery: a claim re-checks its owner is not Up in the very
# statement that moves the row (it may have come back since the candidates were read).
_LIVE = select(ManagementServer.msid).where(ManagementServer.state == UP)


def derive_msid(name: str, api_address: str) -> int:
    """A server's id: the same for the same machine name and API address across restarts (as
    CloudStack's, from the MAC address), different for two servers on one machine."""
    digest = hashlib.sha256(f"{name}|{api_address}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


@dataclass(frozen=True)
class ServerIdentity:
    """This server as its peers and agents see it."""

    msid: int
    name: str
    service_ip: str
    service_port: int
    agent_port: int | None = None
    version: str = VERSION

    @classmethod
    def of(cls, api_address: str, service_ip: str, service_port: int, agent_port: int | None = None,
           name: str | None = None) -> ServerIdentity:
        name = name or socket.gethostname()
        return cls(derive_msid(name, api_address), name, service_ip, service_port, agent_port)


class ClusterService:
    """The server registry and the claims of what Down servers served, on `db`, as `me`."""

    def __init__(self, db: Database, me: ServerIdentity, sole: bool | None = None):
        self.db = db
        self.me = me
        # The only server the database can have (SQLite, unless told otherwise).
        self.sole = db.is_sqlite if sole is None else sole
        self.run_id = int.from_bytes(os.urandom(6), "big")

    # --- this server ---------------------------------------------------------------------

    def register(self) -> None:
        """At start: this server is Up (a row of its own, kept across restarts)."""
        now = utcnow()
        me = self.me
        with self.db.transaction() as s:
            row = s.execute(select(ManagementServer).where(ManagementServer.msid == me.msid)
                            .with_for_update()).scalar_one_or_none()
            if row is None:
                row = ManagementServer(msid=me.msid, details={})
                s.add(row)
            row.run_id = self.run_id
            row.name, row.service_ip, row.service_port = me.name, me.service_ip, me.service_port
            row.agent_port, row.version = me.agent_port, me.version
            row.state, row.last_update, row.last_start, row.removed = UP, now, now, None
            if self.sole:
                # One engine per SQLite database: a server recorded Up under another identity (the
                # API address or machine name changed) is this one's previous run, not a peer.
                s.execute(update(ManagementServer).where(ManagementServer.msid != me.msid,
                                                         ManagementServer.state == UP).values(state=DOWN))
            uname = platform.uname()
            row.details = dict(row.details or {}, osdistribution=_os_distribution(), kernelversion=uname.release,
                               pythonversion=platform.python_version(), boottime=_boot_time())
        log.info("management server %s (msid %d) registered, engine-to-engine address %s:%d",
                 me.name, me.msid, me.service_ip, me.service_port)

    def heartbeat(self) -> bool:
        """Record this server's heartbeat; False when a peer found it Down meanwhile (its hosts
        and jobs are the peers' now) or another process runs as this server."""
        with self.db.transaction() as s:
            row = s.execute(select(ManagementServer).where(ManagementServer.msid == self.me.msid)
                            .with_for_update()).scalar_one_or_none()
            if row is None or row.state != UP or row.run_id != self.run_id:
                return False
            row.last_update = utcnow()
            return True

    def recorded_state(self) -> str | None:
        """This server's state as its row in the database says, None when the row is another
        run's (another process runs as this server); raises DatabaseUnavailable when the
        database cannot be reached."""
        with self.db.transaction(readonly=True) as s:
            row = s.execute(select(ManagementServer.state, ManagementServer.run_id).where(
                ManagementServer.msid == self.me.msid)).first()
        if row is None or row[1] != self.run_id:
            return None
        return row[0]

    def stopped(self) -> None:
        """At a clean shutdown: Down, with the time."""
        now = utcnow()
        with self.db.transaction() as s:
            s.execute(update(ManagementServer)
                      .where(ManagementServer.msid == self.me.msid, ManagementServer.run_id == self.run_id)
                      .values(state=DOWN, last_stop=now))

    # --- peers -----------------------------------------------------------------------------

    def find_down(self, threshold: float) -> list[int]:
        """Mark Down the peers whose last heartbeat is older than `threshold` seconds; their msids."""
        cutoff = utcnow() - dt.timedelta(seconds=threshold)
        found = []
        late_q = select(ManagementServer.msid, ManagementServer.name).where(
            ManagementServer.state == UP, ManagementServer.last_update < cutoff, ManagementServer.msid != self.me.msid)
        with self.db.transaction(readonly=True) as s:
            if not s.execute(late_q).first():
                return found        # the usual case: no write
        with self.db.transaction() as s:
            late = s.execute(late_q).all()
            for msid, name in late:
                done = s.execute(update(ManagementServer).where(
                    ManagementServer.msid == msid, ManagementServer.state == UP,
                    ManagementServer.last_update < cutoff).values(state=DOWN))
                if done.rowcount:
                    found.append(msid)
                    log.warning("management server %s (msid %d) has no heartbeat for more than %.1f s: Down",
                                name, msid, threshold)
        return found

    def up(self, session: Session | None = None) -> set[int]:
        """The msids of the servers that are Up (this one included)."""
        if session is None:
            with self.db.transaction(readonly=True) as s:
                return self.up(s)
        return set(session.execute(select(ManagementServer.msid).where(ManagementServer.state == UP)).scalars())

    def peer_address(self, msid: int) -> tuple[str, int] | None:
        """Where a live peer serves other servers; None when it is not Up (or is this one)."""
        if msid == self.me.msid:
            return None
        with self.db.transaction(readonly=True) as s:
            row = s.execute(select(ManagementServer.service_ip, ManagementServer.service_port).where(
                ManagementServer.msid == msid, ManagementServer.state == UP)).first()
        return (row[0], row[1]) if row is not None else None

    def host_owner(self, guid: str) -> int | None:
        """The msid of the server holding the agent of host `guid` (the host may have just been removed)."""
        with self.db.transaction(readonly=True) as s:
            return s.execute(select(Host.mgmt_server_id).where(Host.guid == guid)
                             .order_by(Host.removed.is_not(None), Host.id.desc()).limit(1)).scalar_one_or_none()

    def _not_live(self, column: object, up: Collection[int]) -> object:
        """`column` names no live server: NULL, or a server not Up (never this one)."""
        return or_(column.is_(None), column.not_in(sorted(set(up) | {self.me.msid})))

    # --- what this server serves, and what it claims ------------------------------------------

    def served_hosts(self) -> Sequence[str]:
        """Guids of hosts whose agents were connected to this server, or to no live server,
        before this start: the heartbeat monitor judges them Down when they do not come back."""
        with self.db.transaction(readonly=True) as s:
            up = self.up(s) - {self.me.msid}
            return s.execute(select(Host.guid).where(
                Host.removed.is_(None), Host.guid.is_not(None), Host.state.in_(SERVED_STATES),
                or_(Host.mgmt_server_id == self.me.msid, self._not_live(Host.mgmt_server_id, up)))).scalars().all()

    def claim_hosts(self) -> list[str]:
        """Hosts left by a server that is not Up (their agents were connected there): this server
        watches them now, and marks them Down unless their agents come back (here or elsewhere)."""
        with self.db.transaction(readonly=True) as s:
            up = self.up(s)
            rows = s.execute(select(Host.id, Host.guid, Host.mgmt_server_id).where(
                Host.removed.is_(None), Host.guid.is_not(None), Host.mgmt_server_id.is_not(None),
                Host.mgmt_server_id.not_in(sorted(up)), Host.state.in_(SERVED_STATES),
                or_(Host.hypervisor != "Simulator", Host.details["agent"].as_string() == EXTERNAL))).all()
        claimed = []
        if not rows:
            return claimed
        with self.db.transaction() as s:
            for host_id, guid, owner in rows:
                done = s.execute(update(Host).where(Host.id == host_id, Host.mgmt_server_id == owner,
                                                    Host.mgmt_server_id.not_in(_LIVE))
                                 .values(mgmt_server_id=self.me.msid).execution_options(synchronize_session=False))
                if done.rowcount:
                    claimed.append(guid)
        if claimed:
            log.info("watching %d host(s) whose management server is Down until their agents reconnect",
                     len(claimed))
        return claimed

    def claim_simulated_hosts(self, orphans_only: bool = False) -> list[tuple[str, str]]:
        """(guid, url) of the in-engine Simulator hosts this server runs from now on: its own
        (unless `orphans_only`), and those of no live server (each runs on exactly one server)."""
        with self.db.transaction(readonly=True) as s:
            up = self.up(s) - {self.me.msid}
            if orphans_only:
                # Left by a server that is not Up (a host nobody ran yet is its adder's to start).
                whose = Host.mgmt_server_id.not_in(sorted(up | {self.me.msid}))
            else:
                whose = or_(Host.mgmt_server_id == self.me.msid, self._not_live(Host.mgmt_server_id, up))
            rows = s.execute(select(Host.id, Host.guid, Host.url, Host.details, Host.mgmt_server_id).where(
                Host.hypervisor == "Simulator", Host.removed.is_(None), Host.guid.is_not(None), whose)).all()
        claimed = []
        if not rows:
            return claimed
        with self.db.transaction() as s:
            for host_id, guid, url, details, owner in rows:
                if (details or {}).get("agent") == EXTERNAL:
                    continue  # its simulated agent runs elsewhere and reconnects by itself
                if owner != self.me.msid:
                    owned = Host.mgmt_server_id.is_(None) if owner is None else Host.mgmt_server_id == owner
                    done = s.execute(update(Host).where(Host.id == host_id, owned,
                                                        or_(Host.mgmt_server_id.is_(None), Host.mgmt_server_id.not_in(_LIVE)))
                                     .values(mgmt_server_id=self.me.msid)
                                     .execution_options(synchronize_session=False))
                    if not done.rowcount:
                        continue
                claimed.append((guid, url))
        if orphans_only and claimed:
            log.warning("took over %d Simulator host(s) of management server(s) found Down", len(claimed))
        return claimed

    def claim_jobs(self, exclude: Collection[str] = ()) -> list[str]:
        """Uuids of the pending jobs of servers that are not Up, now this server's (none twice:
        each is moved by a conditional update); `exclude`: jobs this server runs already."""
        with self.db.transaction(readonly=True) as s:
            up = self.up(s)
            rows = s.execute(select(AsyncJob.id, AsyncJob.uuid, AsyncJob.executing_msid).where(
                AsyncJob.status == PENDING, AsyncJob.executing_msid.is_not(None),
                AsyncJob.executing_msid.not_in(sorted(up | {self.me.msid}))).order_by(AsyncJob.id)).all()
        claimed = []
        if not rows:
            return claimed
        with self.db.transaction() as s:
            for job_id, job_uuid, owner in rows:
                if job_uuid in exclude:
                    continue
                done = s.execute(update(AsyncJob).where(AsyncJob.id == job_id, AsyncJob.executing_msid == owner,
                                                        AsyncJob.status == PENDING, AsyncJob.executing_msid.not_in(_LIVE))
                                 .values(executing_msid=self.me.msid).execution_options(synchronize_session=False))
                if done.rowcount:
                    claimed.append(job_uuid)
        if claimed:
            log.warning("took over %d unfinished job(s) of management server(s) found Down", len(claimed))
        return claimed

    def pending_jobs(self) -> list[str]:
        """At start: the pending jobs this server runs (its own, and those of no live server)."""
        with self.db.transaction(readonly=True) as s:
            up = self.up(s) - {self.me.msid}
            return s.execute(select(AsyncJob.uuid).where(
                AsyncJob.status == PENDING,
                or_(AsyncJob.executing_msid == self.me.msid, self._not_live(AsyncJob.executing_msid, up)))
                .order_by(AsyncJob.id)).scalars().all()

    def may_run(self, session: Session, job: AsyncJob) -> bool:
        """Whether this server runs `job` (locked in `session`): unclaimed, its own, or left by a
        server that is not Up (then claimed here). A job a live peer runs is left alone."""
        owner = job.executing_msid
        if owner == self.me.msid:
            return True
        if owner is not None and owner in self.up(session):
            return False
        job.executing_msid = self.me.msid
        return True


def owned_by(msid: int) -> object:
    """A host is served by server `msid`, or by no server yet (a host of before several servers)."""
    return or_(Host.mgmt_server_id == msid, Host.mgmt_server_id.is_(None))


SERVER_FILTERS = (
    Filter("id", ManagementServer.id, ROW),
    Filter("name", ManagementServer.name, NOCASE),
    Filter("state", ManagementServer.state, NOCASE),
)


def list_servers(ctx: Context, p: SimpleNamespace) -> Page:
    """The management servers listManagementServers `p` asks for, in id order."""
    q = select(ManagementServer).where(ManagementServer.removed.is_(None))
    return page(ctx, p, filtered(q, SERVER_FILTERS, p), ManagementServer.id)


def served_counts(session: Session, msids: Collection[int]) -> tuple[dict[int, int], dict[int, int]]:
    """({msid: hosts whose agent it holds}, {msid: pending jobs it runs})."""
    if not msids:
        return {}, {}
    hosts = dict(session.execute(select(Host.mgmt_server_id, func.count()).where(
        Host.mgmt_server_id.in_(msids), Host.removed.is_(None), Host.state.in_(SERVED_STATES))
        .group_by(Host.mgmt_server_id)).all())
    jobs = dict(session.execute(select(AsyncJob.executing_msid, func.count()).where(
        AsyncJob.executing_msid.in_(msids), AsyncJob.status == PENDING).group_by(AsyncJob.executing_msid)).all())
    return hosts, jobs


def server_names(session: Session, msids: Collection[int]) -> dict[int, tuple[str, str]]:
    """{msid: (uuid, name)} of the servers `msids`."""
    if not msids:
        return {}
    return {msid: (uuid, name) for msid, uuid, name in session.execute(
        select(ManagementServer.msid, ManagementServer.uuid, ManagementServer.name)
        .where(ManagementServer.msid.in_(msids))).all()}


def _os_distribution() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
    except OSError:
        return platform.system()


def _boot_time() -> int | None:
    """When this machine booted (epoch seconds), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None
