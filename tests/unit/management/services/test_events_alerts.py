"""Events and alerts: recorded in the change's transaction, listed, archived and deleted with
CloudStack's parameters, and alerts mailed once through a real SMTP server on loopback."""

import datetime as dt
import socket
from types import SimpleNamespace

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from stackwright.management.commands.events import alert_view, render_events
from stackwright.management.context import Context
from stackwright.management.errors import InvalidParameterValue
from stackwright.management.persistence.models import Alert, ConfigValue, Domain, Event, utcnow
from stackwright.management.services import alerts
from stackwright.management.services.alerts import AlertMailer, CapacityChecker
from stackwright.management.services.configuration import GlobalSettings
from tests.unit.management.services.conftest import engine_for, root_admin
from tests.support.waiting import wait_for
from tests.unit.management.services.test_vms import World

LIST = ("id", "type", "level", "state", "startdate", "enddate", "resourceid", "resourcetype", "account",
        "domainid", "listall", "isrecursive", "keyword", "page", "pagesize", "name")


def params(**given):
    values = dict.fromkeys(LIST)
    values.update(given)
    return SimpleNamespace(**values)


def listed(ctx, **given):
    return render_events(ctx, ctx.events.list_page(params(**given)).rows)


def test_events_carry_their_resource_type_and_are_filtered(ctx):
    ctx.event("VM.START", "Started VM i-1", "11111111-1111-1111-1111-111111111111")
    ctx.event("MAINT.PREPARE", "Host h1 prepares for maintenance", "22222222-2222-2222-2222-222222222222")
    ctx.event("VM.STOP", "VM i-1 stopped outside the engine", "11111111-1111-1111-1111-111111111111", level="WARN")
    views = listed(ctx)
    assert [v["type"] for v in views] == ["VM.STOP", "MAINT.PREPARE", "VM.START"]     # newest first
    assert views[1]["resourcetype"] == "Host" and views[0]["resourcetype"] == "VirtualMachine"
    assert {"id", "username", "type", "level", "description", "account", "domainid", "domain", "created",
            "state"} <= set(views[0])
    assert views[0]["state"] == "Completed" and views[0]["username"] == "admin"
    assert [v["type"] for v in listed(ctx, type="vm.start")] == ["VM.START"]
    assert [v["type"] for v in listed(ctx, level="WARN")] == ["VM.STOP"]
    assert len(listed(ctx, resourceid="11111111-1111-1111-1111-111111111111")) == 2
    assert [v["type"] for v in listed(ctx, resourcetype="Host")] == ["MAINT.PREPARE"]
    assert [v["type"] for v in listed(ctx, keyword="maintenance")] == ["MAINT.PREPARE"]
    assert listed(ctx, startdate=utcnow() + dt.timedelta(minutes=1)) == []
    assert len(listed(ctx, domainid=ctx.account.domain)) == 3
    other = Domain(name="other", path="ROOT/other")
    ctx.session.add(other)
    ctx.session.flush()
    assert listed(ctx, domainid=other) == []
    assert len(listed(ctx, enddate=utcnow().replace(hour=0, minute=0, second=0, microsecond=0))) == 3
    with pytest.raises(InvalidParameterValue, match="Level DEBUG is invalid"):
        listed(ctx, level="DEBUG")


def test_engine_events_are_listed_with_listall_only(ctx):
    engine_ctx = Context(ctx.engine, ctx.session, None, "agent")
    engine_ctx.event("HOST.DOWN", "Host h is Down")
    assert listed(ctx) == []
    view, = listed(ctx, listall=True)
    assert (view["account"], view["username"]) == ("system", "system")


def test_archive_and_delete_events(ctx):
    for n in range(3):
        ctx.event("ZONE.CREATE", f"zone {n}", None)
    ctx.event("POD.CREATE", "pod", None)
    with pytest.raises(InvalidParameterValue, match="either ids, type or enddate must be specified"):
        ctx.events.archive([], None, None, None)
    with pytest.raises(InvalidParameterValue, match="start date cannot be after end date"):
        ctx.events.delete([], "ZONE.CREATE", utcnow(), utcnow() - dt.timedelta(days=1))
    ctx.session.flush()
    first = ctx.session.execute(select(Event).where(Event.type == "ZONE.CREATE").order_by(Event.id)).scalars().first()
    assert ctx.events.archive([first], None, None, None) == 1
    assert [v["description"] for v in listed(ctx, type="ZONE.CREATE")] == ["zone 2", "zone 1"]
    assert ctx.events.delete([], "ZONE.CREATE", None, None) == 3       # the archived one too
    assert [v["type"] for v in listed(ctx)] == ["POD.CREATE"]


def test_alerts_list_archive_delete(ctx):
    world = World(ctx)
    ctx.alerts.raise_alert(alerts.HOST, "Host h1 is Down", zone_id=world.zone.id)
    ctx.alerts.raise_alert(alerts.USERVM, "VM i-2 stopped unexpectedly")
    ctx.session.flush()
    page = ctx.alerts.list_page(params())
    views = [alert_view(a) for a in page.rows]
    assert [(v["type"], v["name"]) for v in views] == [(8, "ALERT.USERVM"), (7, "ALERT.COMPUTE.HOST")]
    assert set(views[0]) == {"id", "type", "name", "description", "sent"}
    assert [a.type for a in ctx.alerts.list_page(params(type=7)).rows] == [7]
    assert [a.type for a in ctx.alerts.list_page(params(name="alert.uservm")).rows] == [8]
    assert ctx.alerts.archive([], 7, None, None) == 1
    assert [a.type for a in ctx.alerts.list_page(params()).rows] == [8]
    assert ctx.alerts.delete([], None, None, utcnow() + dt.timedelta(seconds=1)) == 2


def test_capacity_past_the_notification_threshold_raises_one_alert(ctx):
    world = World(ctx)
    host = world.host(cpus=2, speed=1000, memory=2 * 1024 ** 3)
    world.vm(host, cpus=1, speed=500, memory=1024)          # 25 % CPU, 50 % memory
    ctx.alerts.check_cluster_capacity(world.cluster.id)
    ctx.session.flush()
    assert ctx.session.execute(select(Alert).where(Alert.cluster_id == world.cluster.id)).scalars().all() == []
    world.vm(host, cpus=1, speed=500, memory=700)           # memory 84 % > 75 %
    ctx.alerts.check_cluster_capacity(world.cluster.id)
    ctx.alerts.check_cluster_capacity(world.cluster.id)     # within alert.wait: not again
    ctx.session.flush()
    raised = ctx.session.execute(select(Alert).where(Alert.cluster_id == world.cluster.id)).scalars().all()
    assert [(a.type, a.name) for a in raised] == [(0, "ALERT.MEMORY")]
    assert "Low Available memory in cluster" in raised[0].subject


def test_the_capacity_checker_looks_once_at_the_clusters_changed_in_a_burst_and_at_all_each_period():
    checked = []
    checker = CapacityChecker(checked.append, lambda: 3600.0)
    checker.start()
    try:
        for cluster_id in (3, 1, 3):
            checker.changed(cluster_id)
        wait_for("the changed clusters checked", lambda: checked, 10, interval=0.05)
        assert checked == [{1, 3}]
    finally:
        checker.stop()
    periodic = CapacityChecker(checked.append, lambda: 0.05)
    periodic.start()
    try:
        wait_for("two periodic checks", lambda: checked.count(None) >= 2, 10, interval=0.05)
    finally:
        periodic.stop()


def test_a_guest_start_leaves_the_capacity_check_to_the_checker_after_its_commit(ctx, monkeypatch):
    world = World(ctx)
    host = world.host(cpus=2, speed=1000, memory=2 * 1024 ** 3)
    world.vm(host, cpus=1, speed=500, memory=1800)
    checked = []
    checker = CapacityChecker(checked.append, lambda: 3600.0)
    monkeypatch.setattr(ctx.engine, "capacity_checker", checker)
    checker.start()
    try:
        ctx.alerts.capacity_changed(world.cluster.id)
        # Nothing is computed in the guest's own transaction, and the checker hears of it only
        # once that transaction committed.
        assert ctx.session.execute(select(Alert).where(Alert.cluster_id == world.cluster.id)).first() is None
        assert checked == []
        ctx.run_after_commit()
        wait_for("the cluster checked", lambda: checked, 10, interval=0.05)
        assert checked == [{world.cluster.id}]
    finally:
        checker.stop()


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


def set_values(db, **values):
    with db.transaction() as s:
        for name, value in values.items():
            s.add(ConfigValue(name=name, scope="global", resource_id=0, value=value))


def test_alerts_are_mailed_once_when_mail_is_set_up(db, smtp_server):
    controller, inbox = smtp_server
    settings = GlobalSettings(db)
    mailer = AlertMailer(db, settings)
    with db.transaction() as s:
        ctx = Context(engine_for(db), s, root_admin(s))
        ctx.alerts.raise_alert(alerts.HOST, "Host h9 is Down")
    assert mailer.send_pending() == 0                       # no addresses: nothing is mailed
    port = controller.port
    set_values(db, **{"alert.email.addresses": "ops@example.org, oncall@example.org",
                      "alert.email.sender": "cloud@example.org", "alert.smtp.host": "127.0.0.1",
                      "alert.smtp.port": str(port)})
    settings.invalidate()
    assert mailer.send_pending() == 1
    assert mailer.send_pending() == 0                       # once
    envelope, = inbox.messages
    assert envelope.mail_from == "cloud@example.org"
    assert envelope.rcpt_tos == ["ops@example.org", "oncall@example.org"]
    text = envelope.content.decode()
    assert "Subject: Host h9 is Down" in text and "ALERT.COMPUTE.HOST" in text
    with db.transaction(readonly=True) as s:
        assert s.execute(select(Alert.mailed).where(Alert.subject == "Host h9 is Down")).scalar_one() is not None


def test_an_unreachable_mail_server_leaves_the_alert_for_the_next_round(db):
    settings = GlobalSettings(db)
    with db.transaction() as s:
        ctx = Context(engine_for(db), s, root_admin(s))
        ctx.alerts.raise_alert(alerts.STORAGE_MISC, "Pool p1 is unreachable")
        s.query(ConfigValue).filter(ConfigValue.name.like("alert.%")).delete()
    set_values(db, **{"alert.email.addresses": "ops@example.org", "alert.smtp.host": "127.0.0.1",
                      "alert.smtp.port": "1", "alert.smtp.timeout": "2000"})
    settings.invalidate()
    assert AlertMailer(db, settings).send_pending() == 0
    with db.transaction(readonly=True) as s:
        assert s.execute(select(Alert.mailed).where(Alert.subject == "Pool p1 is unreachable")).scalar_one() is None


def test_alert_mail_logs_in_with_the_encrypted_password(db):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    from stackwright.management.services.configuration import ConfigurationService

    logins = []

    def authenticator(server, session, envelope, mechanism, data):
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"alerts", b"Pa55-word")
        logins.append(ok)
        return AuthResult(success=ok)

    inbox = Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=authenticator,
                            auth_require_tls=False, auth_required=True)
    controller.start()
    settings, engine = GlobalSettings(db), engine_for(db)
    try:
        with db.transaction() as s:
            s.query(ConfigValue).filter(ConfigValue.name.like("alert.%")).delete()
            Context(engine, s, root_admin(s)).alerts.raise_alert(alerts.HOST, "Host h7 is Down")
            service = ConfigurationService(s, settings)
            for name, value in {"alert.email.addresses": "ops@example.org", "alert.smtp.host": "127.0.0.1",
                                "alert.smtp.port": str(port), "alert.smtp.useAuth": "true",
                                "alert.smtp.username": "alerts", "alert.smtp.password": "Pa55-word"}.items():
                service.set_global(name, value)
        with db.transaction(readonly=True) as s:
            assert "Pa55" not in s.execute(select(ConfigValue.value).where(
                ConfigValue.name == "alert.smtp.password")).scalar_one()
        settings.invalidate()
        assert AlertMailer(db, settings).send_pending() >= 1
        assert logins == [True]
        assert any(b"Host h7 is Down" in e.content for e in inbox.messages)
    finally:
        controller.stop()
        with db.transaction() as s:
            s.query(ConfigValue).filter(ConfigValue.name.like("alert.%")).delete()
