"""Alerts: what an administrator must look at, with CloudStack's alert type codes.

`ctx.alerts.raise_alert(...)` adds a row to the change's own transaction (a host going Down,
a guest that stopped unexpectedly, an HA restart and its failure, an unreachable pool, a
cluster past its capacity notification threshold). listAlerts reads them; archiveAlerts and
deleteAlerts clear them. With `alert.email.addresses` and `alert.smtp.host` set, the engine's
`AlertMailer` mails every alert once, after it committed.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
import threading
import time
from email.message import EmailMessage
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update

from ..errors import DatabaseUnavailable, InvalidParameterValue
from ..persistence.models import Alert, Cluster, utcnow
from .events import between
from .queries import EXACT, Filter, NOCASE, filtered, keyword, page

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence
    from types import SimpleNamespace

    from sqlalchemy import ColumnElement

    from ..context import Context
    from ..persistence.db import Database
    from .configuration import GlobalSettings
    from .queries import Page

log = logging.getLogger(__name__)

# CloudStack's AlertService.AlertType: code -> name (the codes of capacities are theirs).
MEMORY, CPU, STORAGE, STORAGE_ALLOCATED = 0, 1, 2, 3
HOST, USERVM, STORAGE_MISC, USERVM_MIGRATE = 7, 8, 12, 17
ALERT_NAMES = {
    0: "ALERT.MEMORY", 1: "ALERT.CPU", 2: "ALERT.STORAGE", 3: "ALERT.STORAGE.ALLOCATED",
    4: "ALERT.NETWORK.PUBLICIP", 5: "ALERT.NETWORK.PRIVATEIP", 6: "ALERT.STORAGE.SECONDARY",
    7: "ALERT.COMPUTE.HOST", 8: "ALERT.USERVM", 9: "ALERT.SERVICE.DOMAINROUTER", 10: "ALERT.SERVICE.CONSOLEPROXY",
    11: "ALERT.NETWORK.ROUTING", 12: "ALERT.STORAGE.MISC", 13: "ALERT.USAGE", 14: "ALERT.MANAGEMENT",
    15: "ALERT.NETWORK.DOMAINROUTERMIGRATE", 16: "ALERT.SERVICE.CONSOLEPROXYMIGRATE", 17: "ALERT.USERVM.MIGRATE",
    18: "ALERT.NETWORK.VLAN", 19: "ALERT.SERVICE.SSVM", 20: "ALERT.USAGE.RESULT", 21: "ALERT.STORAGE.DELETE",
    22: "ALERT.RESOURCE.COUNT", 23: "ALERT.USAGE.SANITY", 24: "ALERT.NETWORK.DIRECTPUBLICIP",
    25: "ALERT.STORAGE.LOCAL", 26: "ALERT.RESOURCE.EXCEED", 27: "ALERT.TYPE.SYNC", 28: "ALERT.UPLOAD.FAILED",
}
# Capacity type -> (notification threshold setting), checked per cluster after a guest starts.
CAPACITY_THRESHOLDS = {
    MEMORY: "cluster.memory.allocated.capacity.notificationthreshold",
    CPU: "cluster.cpu.allocated.capacity.notificationthreshold",
}
# Alerts older than this are not mailed (mail was not set up when they were raised).
MAIL_WINDOW = dt.timedelta(hours=1)

ALERT_FILTERS = (
    Filter("type", Alert.type, EXACT),
    Filter("name", Alert.name, NOCASE),
    keyword(Alert.subject, Alert.name),
)


class AlertService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.session = ctx.session

    def raise_alert(self, type: int, subject: str, *, zone_id: int | None = None, pod_id: int | None = None,
                    cluster_id: int | None = None, resource_uuid: str | None = None,
                    content: str | None = None) -> Alert:
        alert = Alert(type=type, name=ALERT_NAMES.get(type, f"ALERT.{type}"), subject=subject[:1024],
                      content=content or subject, zone_id=zone_id, pod_id=pod_id, cluster_id=cluster_id,
                      resource_uuid=resource_uuid)
        self.session.add(alert)
        log.warning("alert %s: %s", alert.name, subject)
        return alert

    def capacity_changed(self, cluster_id: int) -> None:
        """Guests of the cluster now hold more: the engine's capacity checker looks at it soon
        after this transaction commits (not in it: a job step pays no capacity computation)."""
        checker = self.ctx.engine.capacity_checker
        self.ctx.after_commit(lambda: checker.changed(cluster_id))

    def check_capacity(self, cluster_ids: Collection[int] | None = None) -> None:
        """check_cluster_capacity for `cluster_ids`, or for every cluster."""
        if cluster_ids is None:
            cluster_ids = self.session.execute(select(Cluster.id).where(Cluster.removed.is_(None))).scalars().all()
        for cluster_id in sorted(cluster_ids):
            self.check_cluster_capacity(cluster_id)

    def check_cluster_capacity(self, cluster_id: int) -> None:
        """Raise a memory or CPU alert when what the cluster's guests hold passes its
        notification threshold, unless one was raised for it within `alert.wait` seconds."""
        # Locked: a checker on another management server waits, then sees this one's alert.
        cluster = self.session.get(Cluster, cluster_id, with_for_update=True)
        if cluster is None or cluster.removed is not None:
            return
        capacity = self.ctx.capacity.cluster_capacities({cluster.id: cluster}).get(cluster.id)
        if capacity is None:
            return
        settings = self.ctx.settings
        since = utcnow() - dt.timedelta(seconds=settings.typed("alert.wait"))
        for kind, setting in CAPACITY_THRESHOLDS.items():
            limit = float(settings.scoped_value(setting, "cluster", cluster))
            total = capacity.cpu_total if kind == CPU else capacity.memory_total
            used = capacity.used.cpu_mhz if kind == CPU else capacity.used.memory_bytes
            if not total or used / total <= limit:
                continue
            recent = self.session.execute(select(Alert.id).where(
                Alert.type == kind, Alert.cluster_id == cluster.id, Alert.created >= since).limit(1)).first()
            if recent is not None:
                continue
            what = "CPU" if kind == CPU else "memory"
            self.raise_alert(kind, f"System Alert: Low Available {what} in cluster {cluster.name} pod "
                                   f"{cluster.pod.name} of availability zone {cluster.zone.name}: "
                                   f"{used / total * 100:.2f}% allocated, over the notification threshold of "
                                   f"{limit * 100:g}%",
                             zone_id=cluster.zone_id, pod_id=cluster.pod_id, cluster_id=cluster.id,
                             resource_uuid=cluster.uuid)

    # --- reads ----------------------------------------------------------------------------------

    def list_page(self, p: SimpleNamespace) -> Page:
        q = select(Alert).where(Alert.archived.is_(False))
        if p.id is not None:
            q = q.where(Alert.id == p.id.id)
        return page(self.ctx, p, filtered(q, ALERT_FILTERS, p), Alert.id.desc())

    # --- archiveAlerts, deleteAlerts ---------------------------------------------------------------

    def archive(self, ids: Sequence[Alert], type: int | None, start: dt.datetime | None,
                end: dt.datetime | None) -> int:
        which = _which(ids, type, start, end)
        return self.session.execute(update(Alert).where(*which, Alert.archived.is_(False)).values(archived=True)
                                    .execution_options(synchronize_session=False)).rowcount

    def delete(self, ids: Sequence[Alert], type: int | None, start: dt.datetime | None,
               end: dt.datetime | None) -> int:
        which = _which(ids, type, start, end)
        return self.session.execute(delete(Alert).where(*which).execution_options(synchronize_session=False)).rowcount


def _which(ids: Sequence[Alert], type: int | None, start: dt.datetime | None,
           end: dt.datetime | None) -> list[ColumnElement[bool]]:
    if not ids and type is None and end is None:
        raise InvalidParameterValue("either ids, type or enddate must be specified")
    if start is not None and end is not None and start > end:
        raise InvalidParameterValue("Please provide a valid date range, start date cannot be after end date")
    which = between(Alert.created, start, end)
    if ids:
        which.append(Alert.id.in_([a.id for a in ids]))
    if type is not None:
        which.append(Alert.type == type)
    return which


# --- capacity checks -----------------------------------------------------------------------------


class CapacityChecker:
    """Every cluster's allocated capacity against its notification thresholds, as CloudStack's
    capacity checker does, every `capacity.check.period` milliseconds; and a cluster whose guests
    took more (`changed`) within COALESCE seconds, once for however many starts came meanwhile.

    `check(cluster_ids)`, given by the engine, checks them (None: every cluster) in a transaction."""

    COALESCE = 1.0

    def __init__(self, check: Callable[[Collection[int] | None], None], period: Callable[[], float]) -> None:
        self._check = check
        self._period = period
        self._changed: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def changed(self, cluster_id: int) -> None:
        with self._lock:
            self._changed.add(cluster_id)
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="capacity-checker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        due = time.monotonic() + self._period()
        while not self._stop.is_set():
            self._wake.wait(max(0.0, due - time.monotonic()))
            if self._stop.is_set():
                return
            every = time.monotonic() >= due
            if not every:
                # Starts come in bursts: one look after the burst instead of one per start.
                self._stop.wait(self.COALESCE)
            self._wake.clear()
            with self._lock:
                changed, self._changed = self._changed, set()
            try:
                self._check(None if every else changed)
            except Exception as e:  # the checker must survive a database that went away
                if isinstance(e, DatabaseUnavailable):
                    log.warning("cannot check cluster capacity: %s; retrying at the next change or period", e.text)
                else:
                    log.exception("checking cluster capacity failed; retrying at the next change or period")
                with self._lock:
                    self._changed |= changed
            if every:
                due = time.monotonic() + self._period()


# --- mail ---------------------------------------------------------------------------------------


class AlertMailer:
    """Mails committed alerts once each to `alert.email.addresses` through `alert.smtp.*`.

    `send_pending()` mails what is due; the engine calls it every `interval` seconds on a
    thread of its own. An alert is marked mailed after the server accepted it; a server that
    is away leaves it for the next round."""

    def __init__(self, db: Database, settings: GlobalSettings, interval: float = 5.0) -> None:
        self.db = db
        self.settings = settings
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def configured(self) -> bool:
        return bool(self._addresses()) and bool(self.settings.get("alert.smtp.host"))

    def _addresses(self) -> list[str]:
        return [a.strip() for a in (self.settings.get("alert.email.addresses") or "").split(",") if a.strip()]

    def send_pending(self) -> int:
        """Mail the alerts not mailed yet (raised within the last hour); how many were sent."""
        if not self.configured():
            return 0
        with self.db.transaction(readonly=True) as s:
            due = s.execute(select(Alert.id, Alert.name, Alert.subject, Alert.content, Alert.created).where(
                Alert.mailed.is_(None), Alert.created >= utcnow() - MAIL_WINDOW).order_by(Alert.id)).all()
        if not due:
            return 0
        sent = []
        try:
            with self._smtp() as smtp:
                for alert_id, name, subject, content, created in due:
                    smtp.send_message(self._message(name, subject, content, created))
                    sent.append(alert_id)
        except (OSError, smtplib.SMTPException) as e:
            log.warning("could not mail %d alert(s) through %s:%s: %s", len(due) - len(sent),
                        self.settings.get("alert.smtp.host"), self.settings.get("alert.smtp.port"), e)
        if sent:
            with self.db.transaction() as s:
                s.execute(update(Alert).where(Alert.id.in_(sent)).values(mailed=utcnow()))
        return len(sent)

    def _smtp(self) -> smtplib.SMTP:
        s = self.settings
        timeout_ms = s.typed("alert.smtp.timeout")
        timeout = None if timeout_ms < 0 else max(timeout_ms / 1000.0, 0.1)
        smtp = smtplib.SMTP(s.get("alert.smtp.host"), s.typed("alert.smtp.port"), timeout=timeout)
        if s.typed("alert.smtp.useAuth"):
            if s.typed("alert.smtp.useStartTLS"):
                smtp.starttls()
            smtp.login(s.get("alert.smtp.username") or "", s.get("alert.smtp.password") or "")
        return smtp

    def _message(self, name: str, subject: str, content: str | None, created: dt.datetime) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.settings.get("alert.email.sender") or "cloud@localhost"
        msg["To"] = ", ".join(self._addresses())
        msg["Subject"] = subject
        msg.set_content(f"{content or subject}\n\nAlert type: {name}\nRaised: {created.isoformat(timespec='seconds')}Z\n")
        return msg

    # --- the engine's thread ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alert-mailer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.send_pending()
            except Exception:  # the mailer must survive a database that went away
                log.exception("mailing alerts failed; retrying in %ss", self.interval)
