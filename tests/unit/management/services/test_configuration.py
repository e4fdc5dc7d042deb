"""ConfigurationService and key validation on a real SQLite database."""

import pytest

from stackwright.management.errors import InvalidParameterValue
from stackwright.management.persistence.models import Cluster, ClusterDetail, ConfigValue
from stackwright.management.services.configuration import (
    KEYS,
    ConfigurationService,
    GlobalSettings,
    key,
)


@pytest.fixture
def session(ctx):
    return ctx.session


@pytest.fixture
def service(ctx):
    return ctx.settings


@pytest.fixture
def cluster(session, zone_pod):
    zone, pod = zone_pod
    cluster = Cluster(name="c", pod_id=pod.id, zone_id=zone.id, hypervisor="Simulator")
    cluster.details = [ClusterDetail(name="cpuOvercommitRatio", value="1.0"),
                       ClusterDetail(name="memoryOvercommitRatio", value="1.0")]
    session.add(cluster)
    session.flush()
    return cluster


@pytest.mark.parametrize("name, value, text", [
    ("cpu.overprovisioning.factor", "0.99",
     "cpu.overprovisioning.factor should be greater than or equal to 1 and at most 16"),
    ("mem.overprovisioning.factor", "8.5", "mem.overprovisioning.factor should be greater than or equal to 1 and at most 8"),
    *(("mem.overprovisioning.factor", text,
       "Please enter a plain decimal number (digits with at most one point) between 1 and 8 for the configuration "
       "parameter: mem.overprovisioning.factor") for text in ("two", "nan", "2e0", "+2", "2.", ".5", "0x2", "１")),
    ("cpu.overprovisioning.factor", "two",
     "Please enter a plain decimal number (digits with at most one point) between 1 and 16 for the configuration "
     "parameter: cpu.overprovisioning.factor"),
    ("ping.interval", "1.5", "Please enter a valid integer value for parameter ping.interval"),
    ("ping.interval", "0", "ping.interval should be greater than or equal to 1"),
    ("cluster.threshold.enabled", "maybe", "Please enter either 'true' or 'false'."),
    ("pool.storage.capacity.disablethreshold", "-0.1",
     "Please enter a value between 0 and 1 for the configuration parameter: pool.storage.capacity.disablethreshold"),
    ("network.loadbalancer.haproxy.stats.visibility", "public",
     "Please enter : global,guest-network,link-local,disabled,all,default"),
])
def test_validation_texts(name, value, text):
    with pytest.raises(InvalidParameterValue) as info:
        key(name).validate(value)
    assert info.value.text == text
    assert info.value.errorcode == 431


@pytest.mark.parametrize("name, value", [
    ("cpu.overprovisioning.factor", "1"), ("cpu.overprovisioning.factor", "2.0"), ("cpu.overprovisioning.factor", "16"),
    ("mem.overprovisioning.factor", " 1.5 "), ("mem.overprovisioning.factor", "8"),
    ("cluster.threshold.enabled", "TRUE"), ("agent.load.threshold", "0"), ("agent.load.threshold", "1"),
    ("network.loadbalancer.haproxy.stats.visibility", "Guest-Network"), ("ha.tag", "anything"),
    ("ping.interval", None),
])
def test_valid_values(name, value):
    key(name).validate(value)


def test_unknown_key():
    with pytest.raises(InvalidParameterValue) as info:
        key("no.such.key")
    assert info.value.text == "Config parameter with name no.such.key doesn't exist"


def test_every_default_is_valid():
    for k in KEYS.values():
        k.validate(k.default)


def test_listing_global_values_in_name_order(service):
    service.set_global("agent.load.threshold", "0.81")
    listing = service.listing()
    names = [k.name for k, _value in listing]
    assert names == sorted(KEYS)
    values = dict((k.name, v) for k, v in listing)
    assert values["agent.load.threshold"] == "0.81"
    assert values["ping.interval"] == "60"


def test_scoped_listing_falls_back_to_global(service, session, cluster):
    service.set_global("cluster.cpu.allocated.capacity.disablethreshold", "0.9")
    service.set_scoped("cluster.memory.allocated.capacity.disablethreshold", "0.5", "cluster", cluster)
    listing = dict((k.name, v) for k, v in service.listing("cluster", cluster))
    assert set(listing) == {name for name, k in KEYS.items() if "cluster" in k.scopes}
    assert listing["cluster.cpu.allocated.capacity.disablethreshold"] == "0.9"
    assert listing["cluster.memory.allocated.capacity.disablethreshold"] == "0.5"
    assert listing["cpu.overprovisioning.factor"] == "1.0"


def test_cluster_factor_lives_in_cluster_detail(service, cluster):
    service.set_scoped("cpu.overprovisioning.factor", "2.0", "cluster", cluster)
    assert cluster.detail("cpuOvercommitRatio") == "2.0"
    assert service.cluster_ratio(cluster, "cpu.overprovisioning.factor") == 2.0
    assert dict((k.name, v) for k, v in service.listing("cluster", cluster))["cpu.overprovisioning.factor"] == "2.0"
    service.set_global("cpu.overprovisioning.factor", "4")
    # Resetting the cluster value copies the global one into the detail.
    assert service.reset("cpu.overprovisioning.factor", "cluster", cluster) == "4"
    assert cluster.detail("cpuOvercommitRatio") == "4"


def test_scope_must_be_allowed(service, cluster):
    with pytest.raises(InvalidParameterValue) as info:
        service.set_scoped("ping.interval", "30", "cluster", cluster)
    assert info.value.text == "Invalid scope id provided for the parameter ping.interval"


def test_null_and_reset_of_global(service, session):
    service.set_global("ha.tag", "ha")
    assert service.global_value("ha.tag") == "ha"
    service.set_global("ha.tag", None)
    assert service.global_value("ha.tag") is None
    assert service.reset("ha.tag") is None
    assert session.query(ConfigValue).filter_by(name="ha.tag").count() == 0


def test_global_cache_follows_updates(db, session):
    settings = GlobalSettings(db)
    service = ConfigurationService(session, settings)
    assert settings.typed("ping.interval") == 60
    service.set_global("ping.interval", "30")
    session.commit()
    try:
        assert settings.typed("ping.interval") == 30
    finally:
        service.reset("ping.interval")
        session.commit()
    assert settings.typed("ping.interval") == 60


def test_a_secret_setting_is_encrypted_at_rest_and_never_shown(db, session):
    from stackwright.management.commands.configuration import MASKED, configuration_view
    from stackwright.management.services.configuration import seal_stored_secrets

    settings = GlobalSettings(db)
    service = ConfigurationService(session, settings)
    assert key("alert.smtp.password").secret and not key("alert.smtp.username").secret
    service.set_global("alert.smtp.password", "s3cret-Pa55")
    session.commit()
    try:
        stored = session.query(ConfigValue).filter_by(name="alert.smtp.password").one().value
        assert "s3cret" not in stored and stored.startswith("gAAAAA")
        assert settings.get("alert.smtp.password") == "s3cret-Pa55"           # the engine reads it
        assert service.global_value("alert.smtp.password") == "s3cret-Pa55"
        listed = dict(service.listing())
        assert listed[key("alert.smtp.password")] == "s3cret-Pa55"
        view = configuration_view(key("alert.smtp.password"), listed[key("alert.smtp.password")])
        assert view["value"] == MASKED and "s3cret" not in str(view)
        assert configuration_view(key("alert.smtp.password"), None).get("value") is None
        # A value stored in clear before secrets were encrypted reads, and is sealed in place.
        session.query(ConfigValue).filter_by(name="alert.smtp.password").one().value = "old-clear"
        session.commit()
        settings.invalidate()
        assert settings.get("alert.smtp.password") == "old-clear"
        assert seal_stored_secrets(session) == 1
        session.commit()
        assert session.query(ConfigValue).filter_by(name="alert.smtp.password").one().value.startswith("gAAAAA")
        assert seal_stored_secrets(session) == 0
        settings.invalidate()
        assert settings.get("alert.smtp.password") == "old-clear"
    finally:
        service.reset("alert.smtp.password")
        session.commit()
