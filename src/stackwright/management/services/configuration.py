"""Typed configuration with scopes (global, zone, cluster, storagepool, account, domain).

Each key is declared once, in the settings catalogue (settings.json, loaded once into KEYS): its
type, default (CloudStack's), category, the scopes where it may be set, whether it is dynamic,
and whether the engine honours it; the others are stored and returned as given. A scoped value overrides the global one; an unset scoped value
falls back to global, and an unset global value to the default. The over-provisioning factors
are special at cluster scope: they live in the cluster details `cpuOvercommitRatio` and
`memoryOvercommitRatio`, which is what capacity arithmetic reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import InvalidToken
from sqlalchemy import select

from .. import values
from ..errors import InvalidParameterValue
from ..persistence import crypto
from ..persistence.models import Cluster, ConfigValue

if TYPE_CHECKING:
    from sqlalchemy.orm import Session
    from ..persistence.db import Database
    from ..persistence.models import Account, Domain, ImageStore, StoragePool, Zone

    # The row a scoped value belongs to, one per scope of SCOPES.
    ScopeResource: TypeAlias = Zone | Cluster | StoragePool | Account | Domain | ImageStore

log = logging.getLogger(__name__)

SCOPES = ("zone", "cluster", "storagepool", "account", "domain", "imagestore")

CLUSTER_DETAIL_OF = {
    "cpu.overprovisioning.factor": "cpuOvercommitRatio",
    "mem.overprovisioning.factor": "memoryOvercommitRatio",
}


@dataclass(frozen=True)
class Key:
    name: str
    default: str | None
    type: str = "String"            # String, Integer, Long, Float, Double, Boolean
    scopes: tuple = ()              # scopes besides global
    category: str = "Advanced"
    component: str = "management-server"
    description: str = ""
    dynamic: bool = True
    minimum: float | None = None
    group: str = "Miscellaneous"
    subgroup: str = "Others"
    maximum: float | None = None
    choices: tuple = ()             # allowed values of a String key, any case
    plain: bool = False             # a Float key takes digits with at most one point only
    honoured: bool = False          # the engine acts on the value (others are stored and returned)
    secret: bool = False            # a credential: encrypted at rest, never shown by listConfigurations

    @property
    def text(self) -> str:
        """The description listConfigurations shows: honoured settings say so."""
        return f"{self.description} {HONOURED}" if self.honoured else self.description

    def validate(self, value: str | None) -> None:
        """Raise InvalidParameterValue unless `value` fits the key's type and range."""
        if value is None:
            return
        if self.type == "Boolean":
            try:
                values.parse_bool(value)
            except ValueError:
                raise InvalidParameterValue("Please enter either 'true' or 'false'.") from None
            return
        if self.type in ("Integer", "Long", "Float", "Double"):
            try:
                # What a Java Integer, Long or Float holds, in ASCII digits: larger values cannot
                # be stored, and a factor beyond a float's range turns capacities into infinities.
                number = self.typed(value)
            except ValueError:
                if self.plain:
                    raise InvalidParameterValue(
                        "Please enter a plain decimal number (digits with at most one point) between %g and %g "
                        "for the configuration parameter: %s" % (self.minimum or 0, self.maximum, self.name)
                    ) from None
                kind = "decimal number" if self.type in ("Float", "Double") else "integer"
                raise InvalidParameterValue(
                    f"Please enter a valid {kind} value for parameter {self.name}"
                ) from None
            if self.plain and not self.minimum <= number <= self.maximum:
                # CloudStack's text for a factor below 1, with the range the hypervisors take.
                raise InvalidParameterValue(
                    "%s should be greater than or equal to %g and at most %g"
                    % (self.name, self.minimum, self.maximum)
                )
            if self.maximum is not None and not (self.minimum or 0) <= number <= self.maximum:
                raise InvalidParameterValue(
                    f"Please enter a value between {self.minimum or 0:g} and {self.maximum:g} for the configuration parameter: {self.name}"
                )
            if self.minimum is not None and number < self.minimum:
                bound = (f"{self.minimum:g}")
                raise InvalidParameterValue(
                    f"{self.name} should be greater than or equal to {bound}"
                )
            return
        if self.choices and value.lower() not in (c.lower() for c in self.choices):
            raise InvalidParameterValue(f"Please enter : {','.join(self.choices)}")

    def typed(self, value: str | None) -> Any:
        if value is None:
            return None
        if self.type == "Boolean":
            return values.parse_bool(value)
        if self.type == "Integer":
            return values.parse_int(value, *values.INT32)
        if self.type == "Long":
            return values.parse_int(value)
        if self.type in ("Float", "Double"):
            return values.parse_plain_decimal(value) if self.plain else values.parse_decimal(value)
        return value


CATALOGUE = Path(__file__).with_name("settings.json")
HONOURED = "The engine honours this setting."


def _load_catalogue(path: Path = CATALOGUE) -> dict[str, Key]:
    """The settings catalogue (settings.json): every setting a caller may look up or set."""
    entries = json.loads(path.read_text(encoding="utf-8"))
    keys = {}
    for e in entries:
        keys[e["name"]] = Key(
            e["name"], e["default"], e["type"], tuple(e["scopes"]), category=e["category"],
            component=e["component"], description=e["description"], dynamic=e["dynamic"],
            minimum=e.get("minimum"), maximum=e.get("maximum"), group=e.get("group", "Miscellaneous"),
            subgroup=e.get("subgroup", "Others"), choices=tuple(e.get("choices", ())),
            honoured=e.get("honoured", False), plain=e.get("plain", False), secret=e.get("secret", False))
    return keys


KEYS = _load_catalogue()


def stored(name: str, value: str | None) -> str | None:
    """`value` of setting `name` as the database keeps it: a secret setting's as a token of the
    engine's key (crypto), any other as given."""
    k = KEYS.get(name)
    if value is None or k is None or not k.secret:
        return value
    return crypto.seal(value)


def clear(name: str, value: str | None) -> str | None:
    """The value of setting `name` read from the database: a secret setting's token decrypted
    (None, logged, when it does not decrypt with the key in use); a clear value written before
    secret settings were encrypted reads as it is until stackwright-setup-databases seals it."""
    k = KEYS.get(name)
    if value is None or k is None or not k.secret or not crypto.is_encrypted(value):
        return value
    try:
        return crypto.unseal(value)
    except (crypto.KeyFileError, InvalidToken):
        log.error("the stored value of %s does not decrypt with the key file in use", name)
        return None


def seal_stored_secrets(session: Session) -> int:
    """Encrypt the secret settings stored in clear (a database written before they were
    encrypted at rest); how many. Needs the key installed."""
    names = [k.name for k in KEYS.values() if k.secret]
    done = 0
    for row in session.execute(select(ConfigValue).where(ConfigValue.name.in_(names))).scalars():
        if row.value is not None and not crypto.is_encrypted(row.value):
            row.value = crypto.seal(row.value)
            done += 1
    session.flush()
    return done


def key(name: str) -> Key:
    try:
        return KEYS[name]
    except KeyError:
        raise InvalidParameterValue(f"Config parameter with name {name} doesn't exist") from None


class GlobalSettings:
    """Process-wide cache of effective global values, reloaded on every update through this
    server and, for updates through another server on the same database, by `refresh` at
    every heartbeat (cluster.heartbeat.interval)."""

    def __init__(self, db: Database):
        self.db = db
        self._lock = threading.Lock()
        self._values = None
        # The typed values read from `_values` so far (requests check a setting or two on every
        # call), in one pair with it: replaced together, a typed value never outlives a reload.
        self._typed: tuple[dict[str, str | None], dict[str, Any]] | None = None

    def _read(self, session: Session | None) -> dict[str, str | None]:
        """Every key's effective global value as the database holds it now."""
        if session is None:
            with self.db.transaction(readonly=True) as s:
                return self._read(s)
        rows = session.execute(
            select(ConfigValue.name, ConfigValue.value).where(ConfigValue.scope == "global")
        ).all()
        values = {name: k.default for name, k in KEYS.items()}
        values.update({name: clear(name, value) for name, value in rows if name in KEYS})
        return values

    def load(self, session: Session | None = None) -> dict[str, str | None]:
        values = self._read(session)
        with self._lock:
            self._values, self._typed = values, (values, {})
        return values

    def refresh(self, session: Session | None = None) -> list[str]:
        """Reload the cache when the database holds other global values than it (another
        management server on the same database changed them); the names that changed. One
        query of the global rows that are set, which are few: cheap enough for every heartbeat."""
        values = self._read(session)
        current = self._values
        if current is None:
            return []       # not loaded yet (or just invalidated): the next read loads it
        changed = sorted(name for name, value in values.items() if current.get(name) != value)
        if changed:
            with self._lock:
                if self._values is current:
                    self._values, self._typed = values, (values, {})
        return changed

    def get(self, name: str) -> str | None:
        values = self._values if self._values is not None else self.load()
        return values.get(name, KEYS[name].default if name in KEYS else None)

    def typed(self, name: str) -> Any:
        loaded = self._typed
        values, typed = loaded if loaded is not None else (self.load(), {})
        try:
            return typed[name]
        except KeyError:
            pass
        key = KEYS[name]
        value = typed[name] = key.typed(values.get(name, key.default))
        return value

    def invalidate(self) -> None:
        with self._lock:
            self._values = self._typed = None


class ConfigurationService:
    """Reads and writes configuration values inside one transaction."""

    def __init__(self, session: Session, settings: GlobalSettings):
        self.session = session
        self.settings = settings
        # {(scope, resource id): {name: stored value}} read so far in this transaction, one query
        # per scope and resource: a job step asks for a dozen values (ratios, thresholds, limits)
        # of the same few scopes. Writes through this service drop it.
        self._stored: dict[tuple[str, int], dict[str, str | None]] = {}

    def get(self, name: str) -> str | None:
        """The effective global value of `name`, from the engine-wide cache."""
        return self.settings.get(name)

    def typed(self, name: str) -> Any:
        """The effective global value of `name` converted to its type, from the cache."""
        return self.settings.typed(name)

    def invalidate(self) -> None:
        """Drop the engine-wide cache; the next read reloads it from the database."""
        self.settings.invalidate()

    def _row(self, name: str, scope: str, resource_id: int):
        return self.session.execute(
            select(ConfigValue).where(
                ConfigValue.name == name,
                ConfigValue.scope == scope,
                ConfigValue.resource_id == resource_id,
            )
        ).scalar_one_or_none()

    def _stored_value(self, name: str, scope: str, resource_id: int) -> tuple[bool, str | None]:
        """(whether `name` is set at `scope` for `resource_id`, its stored value) as this
        transaction sees it."""
        values = self._stored.get((scope, resource_id))
        if values is None:
            values = self._stored[(scope, resource_id)] = dict(self.session.execute(
                select(ConfigValue.name, ConfigValue.value).where(
                    ConfigValue.scope == scope, ConfigValue.resource_id == resource_id)).all())
        return name in values, values.get(name)

    def global_value(self, name: str) -> str | None:
        """The global value of `name` as this transaction sees it (a change made in it counts at once)."""
        found, value = self._stored_value(name, "global", 0)
        return clear(name, value) if found else key(name).default

    def scoped_value(self, name: str, scope: str, resource: ScopeResource) -> str | None:
        """Effective value of `name` for `resource` at `scope` (scoped, else global)."""
        if scope == "cluster" and name in CLUSTER_DETAIL_OF:
            value = resource.detail(CLUSTER_DETAIL_OF[name])
            if value is not None:
                return value
        found, value = self._stored_value(name, scope, resource.id)
        if found:
            return clear(name, value)
        return self.global_value(name)

    def listing(self, scope: str | None = None, resource: ScopeResource | None = None) -> list[tuple[Key, str | None]]:
        """[(Key, effective value)] ordered by name; with a scope, only the keys valid there."""
        rows = self.session.execute(
            select(ConfigValue.name, ConfigValue.value).where(ConfigValue.scope == "global")
        ).all()
        values = {name: k.default for name, k in KEYS.items()}
        values.update({name: clear(name, value) for name, value in rows if name in KEYS})
        keys = [k for k in KEYS.values() if scope is None or scope in k.scopes]
        if scope is not None:
            scoped = self.session.execute(
                select(ConfigValue.name, ConfigValue.value).where(
                    ConfigValue.scope == scope, ConfigValue.resource_id == resource.id)
            ).all()
            values.update({name: clear(name, value) for name, value in scoped})
            if scope == "cluster":
                for name, detail in CLUSTER_DETAIL_OF.items():
                    if resource.detail(detail) is not None:
                        values[name] = resource.detail(detail)
        return [(k, values.get(k.name)) for k in sorted(keys, key=lambda k: k.name)]

    def set_global(self, name: str, value: str | None) -> None:
        self._stored.clear()
        k = key(name)
        k.validate(value)
        row = self._row(name, "global", 0)
        if row is None:
            self.session.add(ConfigValue(name=name, scope="global", resource_id=0, value=stored(name, value)))
        else:
            row.value = stored(name, value)
        self.session.flush()
        self.settings.invalidate()

    def set_scoped(self, name: str, value: str | None, scope: str, resource: ScopeResource) -> None:
        self._stored.clear()
        k = key(name)
        if scope not in k.scopes:
            raise InvalidParameterValue(f"Invalid scope id provided for the parameter {name}")
        k.validate(value)
        if scope == "cluster" and name in CLUSTER_DETAIL_OF:
            resource.set_detail(CLUSTER_DETAIL_OF[name], value)
        row = self._row(name, scope, resource.id)
        if row is None:
            self.session.add(ConfigValue(name=name, scope=scope, resource_id=resource.id, value=stored(name, value)))
        else:
            row.value = stored(name, value)
        self.session.flush()

    def reset(self, name: str, scope: str | None = None, resource: ScopeResource | None = None) -> str | None:
        self._stored.clear()
        k = key(name)
        if scope is None:
            row = self._row(name, "global", 0)
            if row is not None:
                self.session.delete(row)
            self.session.flush()
            self.settings.invalidate()
            return k.default
        if scope not in k.scopes:
            raise InvalidParameterValue(f"Invalid scope id provided for the parameter {name}")
        row = self._row(name, scope, resource.id)
        if row is not None:
            self.session.delete(row)
        if scope == "cluster" and name in CLUSTER_DETAIL_OF:
            # CloudStack writes the global value back into the cluster detail.
            resource.set_detail(CLUSTER_DETAIL_OF[name], self.global_value(name))
        self.session.flush()
        return self.scoped_value(name, scope, resource)

    def cluster_ratio(self, cluster: Cluster, name: str) -> float:
        """The over-commit ratio capacity uses: the cluster detail, not the live global."""
        value = cluster.detail(CLUSTER_DETAIL_OF[name])
        return float(value if value is not None else self.global_value(name))
