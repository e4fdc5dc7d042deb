"""Database schema of the management engine (SQLAlchemy declarative models).

Every entity has an internal integer id (never shown by the API, except configuration ids),
a UUID that the API exposes, and a `removed` timestamp: rows are soft-deleted, so a UUID of
a removed entity is still recognised, as CloudStack does.
"""

import datetime as dt
import uuid as uuidlib

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from .crypto import Encrypted, EncryptedJSON


def new_uuid() -> str:
    return str(uuidlib.uuid4())


def split_tags(text: str | None) -> list[str]:
    """Tags stored comma-joined ("ssd,fast") as a list."""
    return [t for t in (text or "").split(",") if t]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Entity:
    """Columns shared by every API-visible entity."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    removed: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


# --- accounts ---------------------------------------------------------------


class Domain(Entity, Base):
    __tablename__ = "domain"
    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(255))
    level: Mapped[int] = mapped_column(Integer, default=0)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("domain.id"), nullable=True)
    state: Mapped[str] = mapped_column(String(32), default="Active")
    network_domain: Mapped[str | None] = mapped_column(String(255), nullable=True)


class Account(Entity, Base):
    __tablename__ = "account"
    name: Mapped[str] = mapped_column(String(255))
    account_type: Mapped[int] = mapped_column(Integer, default=0)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domain.id"))
    state: Mapped[str] = mapped_column(String(32), default="enabled")
    network_domain: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # The role its API calls are checked against; None: the default role of account_type.
    role_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    domain: Mapped[Domain] = relationship(lazy="joined")


class User(Entity, Base):
    __tablename__ = "user"
    username: Mapped[str] = mapped_column(String(255))
    password_hash: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255), nullable=True)
    firstname: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lastname: Mapped[str | None] = mapped_column(String(255), nullable=True)
    timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    state: Mapped[str] = mapped_column(String(32), default="enabled")
    # Wrong passwords since the last successful login; past incorrect.login.attempts.allowed
    # the user is locked until an admin enables it again.
    login_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    api_key: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    # Encrypted at rest (services.secrets): a Fernet token, never the secret itself.
    secret_key: Mapped[str | None] = mapped_column(Encrypted(255), nullable=True)
    account: Mapped[Account] = relationship(lazy="joined")


class Role(Entity, Base):
    """A dynamic role: a type (Admin, ResourceAdmin, DomainAdmin, User) and ordered rules.
    `version` grows with every change of the role or its rules, so a compiled copy of the
    rules is known to be current by one number."""

    __tablename__ = "role"
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    role_type: Mapped[str] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class RolePermission(Base):
    """One rule of a role: `allow` or `deny` on an API name or a wildcard, in `sort_order`."""

    __tablename__ = "role_permission"
    __table_args__ = (UniqueConstraint("role_id", "rule"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    role_id: Mapped[int] = mapped_column(ForeignKey("role.id"), index=True)
    rule: Mapped[str] = mapped_column(String(255))
    permission: Mapped[str] = mapped_column(String(8))
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    sort_order: Mapped[int] = mapped_column(Integer, default=0)


class LoginSession(Base):
    __tablename__ = "login_session"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_key: Mapped[str] = mapped_column(String(64), unique=True)
    session_id: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires: Mapped[dt.datetime] = mapped_column(DateTime)


# --- infrastructure hierarchy ----------------------------------------------


class Zone(Entity, Base):
    __tablename__ = "zone"
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    dns1: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dns2: Mapped[str | None] = mapped_column(String(64), nullable=True)
    internal_dns1: Mapped[str | None] = mapped_column(String(64), nullable=True)
    internal_dns2: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ip6_dns1: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ip6_dns2: Mapped[str | None] = mapped_column(String(64), nullable=True)
    guest_cidr: Mapped[str | None] = mapped_column(String(64), nullable=True)
    network_domain: Mapped[str | None] = mapped_column(String(255), nullable=True)
    domain_id: Mapped[int | None] = mapped_column(ForeignKey("domain.id"), nullable=True)
    network_type: Mapped[str] = mapped_column(String(16))
    security_groups_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    allocation_state: Mapped[str] = mapped_column(String(16), default="Disabled")
    zone_token: Mapped[str] = mapped_column(String(64), default=new_uuid)
    dhcp_provider: Mapped[str] = mapped_column(String(64), default="VirtualRouter")
    local_storage_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    details: Mapped[dict] = mapped_column(JSON, default=dict)


class Pod(Entity, Base):
    __tablename__ = "pod"
    name: Mapped[str] = mapped_column(String(255))
    zone_id: Mapped[int] = mapped_column(ForeignKey("zone.id"), index=True)
    gateway: Mapped[str] = mapped_column(String(64))
    netmask: Mapped[str] = mapped_column(String(64))
    start_ip: Mapped[str] = mapped_column(String(64))
    end_ip: Mapped[str] = mapped_column(String(64))
    allocation_state: Mapped[str] = mapped_column(String(16), default="Enabled")
    zone: Mapped[Zone] = relationship(lazy="joined")


class Cluster(Entity, Base):
    __tablename__ = "cluster"
    name: Mapped[str] = mapped_column(String(255))
    pod_id: Mapped[int] = mapped_column(ForeignKey("pod.id"), index=True)
    zone_id: Mapped[int] = mapped_column(ForeignKey("zone.id"), index=True)
    hypervisor: Mapped[str] = mapped_column(String(32))
    cluster_type: Mapped[str] = mapped_column(String(32), default="CloudManaged")
    allocation_state: Mapped[str] = mapped_column(String(16), default="Enabled")
    managed_state: Mapped[str] = mapped_column(String(32), default="Managed")
    arch: Mapped[str] = mapped_column(String(16), default="x86_64")
    url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    pod: Mapped[Pod] = relationship(lazy="joined")
    zone: Mapped[Zone] = relationship(lazy="joined")
    details: Mapped[list["ClusterDetail"]] = relationship(
        back_populates="cluster", lazy="selectin", cascade="all, delete-orphan"
    )

    def detail(self, name: str, default: str | None = None) -> str | None:
        for d in self.details:
            if d.name == name:
                return d.value
        return default

    def set_detail(self, name: str, value: str | None) -> None:
        for d in self.details:
            if d.name == name:
                d.value = value
                return
        self.details.append(ClusterDetail(name=name, value=value))


class ClusterDetail(Base):
    __tablename__ = "cluster_detail"
    __table_args__ = (UniqueConstraint("cluster_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("cluster.id"))
    name: Mapped[str] = mapped_column(String(255))
    value: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    cluster: Mapped[Cluster] = relationship(back_populates="details")


class Host(Entity, Base):
    __tablename__ = "host"
    __table_args__ = (
        Index("ix_host_zone_removed", "zone_id", "removed"),
        Index("ix_host_pod_removed", "pod_id", "removed"),
        Index("ix_host_cluster", "cluster_id"),
        Index("ix_host_ip_address", "ip_address"),
    )
    name: Mapped[str] = mapped_column(String(255))
    guid: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    type: Mapped[str] = mapped_column(String(32), default="Routing")
    state: Mapped[str] = mapped_column(String(32), default="Connecting")
    resource_state: Mapped[str] = mapped_column(String(32), default="Enabled")
    status_message: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    zone_id: Mapped[int] = mapped_column(ForeignKey("zone.id"))
    pod_id: Mapped[int] = mapped_column(ForeignKey("pod.id"))
    cluster_id: Mapped[int] = mapped_column(ForeignKey("cluster.id"))
    hypervisor: Mapped[str] = mapped_column(String(32))
    hypervisor_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    url: Mapped[str] = mapped_column(String(2048))
    ip_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    private_mac: Mapped[str | None] = mapped_column(String(32), nullable=True)
    cpu_sockets: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cpus: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cpu_speed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cpu_used_percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    memory_used_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    capabilities: Mapped[str | None] = mapped_column(String(255), nullable=True)
    host_tags: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    last_pinged: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    disconnected: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # The management server (mshost.msid) holding the host's agent connection (or, for an
    # in-engine Simulator host, running its simulated agent).
    mgmt_server_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    cluster: Mapped[Cluster] = relationship(lazy="joined")

    @property
    def tag_list(self) -> list[str]:
        return split_tags(self.host_tags)


# --- storage ----------------------------------------------------------------


class StoragePool(Entity, Base):
    __tablename__ = "storage_pool"
    name: Mapped[str] = mapped_column(String(255))
    zone_id: Mapped[int] = mapped_column(ForeignKey("zone.id"))
    pod_id: Mapped[int | None] = mapped_column(ForeignKey("pod.id"), nullable=True)
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("cluster.id"), nullable=True)
    scope: Mapped[str] = mapped_column(String(16), default="CLUSTER")
    pool_type: Mapped[str] = mapped_column(String(32))
    host_address: Mapped[str] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    path: Mapped[str] = mapped_column(String(1024))
    # May carry a Ceph secret (rbd://user:secret@monitor/pool): encrypted at rest.
    url: Mapped[str] = mapped_column(Encrypted(2048))
    state: Mapped[str] = mapped_column(String(32), default="Up")
    status_message: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    hypervisor: Mapped[str | None] = mapped_column(String(32), nullable=True)
    provider: Mapped[str] = mapped_column(String(64), default="DefaultPrimary")
    tags: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    managed: Mapped[bool] = mapped_column(Boolean, default=False)
    capacity_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    capacity_iops: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    @property
    def tag_list(self) -> list[str]:
        return split_tags(self.tags)


class ImageStore(Entity, Base):
    __tablename__ = "image_store"
    name: Mapped[str] = mapped_column(String(255))
    zone_id: Mapped[int | None] = mapped_column(ForeignKey("zone.id"), nullable=True)
    url: Mapped[str] = mapped_column(String(2048))
    protocol: Mapped[str] = mapped_column(String(32))
    provider: Mapped[str] = mapped_column(String(64), default="NFS")
    scope: Mapped[str] = mapped_column(String(16), default="ZONE")
    readonly: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(32), default="Up")
    status_message: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    total_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    used_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Encrypted at rest: S3 stores keep their access and secret keys here.
    details: Mapped[dict] = mapped_column(EncryptedJSON(), default=dict)


# --- offerings, templates, guests ----------------------------------------------------


class ServiceOffering(Entity, Base):
    """A compute offering: what a guest gets of CPU and memory.

    A customized offering leaves the three sizes empty; deployVirtualMachine then passes
    them in its `details`.
    """

    __tablename__ = "service_offering"
    name: Mapped[str] = mapped_column(String(255))
    display_text: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    cpu_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cpu_speed: Mapped[int | None] = mapped_column(Integer, nullable=True)          # MHz
    memory_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    offer_ha: Mapped[bool] = mapped_column(Boolean, default=False)
    limit_cpu_use: Mapped[bool] = mapped_column(Boolean, default=False)
    storage_type: Mapped[str] = mapped_column(String(16), default="shared")
    host_tags: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    # Storage tags: the root volume goes to a pool whose tags contain all of them.
    storage_tags: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    is_system: Mapped[bool] = mapped_column(Boolean, default=False)
    domain_id: Mapped[int | None] = mapped_column(ForeignKey("domain.id"), nullable=True)
    # Seeded offerings carry a stable name, so setup never seeds one the operator deleted.
    unique_name: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    sort_key: Mapped[int] = mapped_column(Integer, default=0)

    @property
    def is_customized(self) -> bool:
        return self.cpu_number is None

    @property
    def storage_tag_list(self) -> list[str]:
        return split_tags(self.storage_tags)


class DiskOffering(Entity, Base):
    """A data disk offering: a fixed size, or (customized) the size the deployment asks for,
    on a pool whose tags contain all of the offering's."""

    __tablename__ = "disk_offering"
    name: Mapped[str] = mapped_column(String(255))
    display_text: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    disk_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)   # 0 when customized
    customized: Mapped[bool] = mapped_column(Boolean, default=False)
    tags: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    storage_type: Mapped[str] = mapped_column(String(16), default="shared")
    provisioning_type: Mapped[str] = mapped_column(String(16), default="thin")
    customized_iops: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    min_iops: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_iops: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    display_offering: Mapped[bool] = mapped_column(Boolean, default=True)
    domain_id: Mapped[int | None] = mapped_column(ForeignKey("domain.id"), nullable=True)
    sort_key: Mapped[int] = mapped_column(Integer, default=0)

    @property
    def tag_list(self) -> list[str]:
        return split_tags(self.tags)


class GuestOsCategory(Entity, Base):
    """A family of operating systems (CentOS, Debian, Windows, ...): listOsCategories."""

    __tablename__ = "guest_os_category"
    name: Mapped[str] = mapped_column(String(255), unique=True)


class GuestOs(Entity, Base):
    """An operating system a template declares (listOsTypes), seeded from a fixed catalogue."""

    __tablename__ = "guest_os"
    category_id: Mapped[int] = mapped_column(ForeignKey("guest_os_category.id"))
    display_name: Mapped[str] = mapped_column(String(255), unique=True)
    is_user_defined: Mapped[bool] = mapped_column(Boolean, default=False)


class Template(Entity, Base):
    """A root disk image guests are deployed from, or an ISO (`format` ISO). `zone_id` None:
    available in every zone. `size_bytes` is the disk a guest sees (the image's virtual size)."""

    __tablename__ = "vm_template"
    name: Mapped[str] = mapped_column(String(255))
    display_text: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    format: Mapped[str] = mapped_column(String(16))
    hypervisor: Mapped[str] = mapped_column(String(32))
    zone_id: Mapped[int | None] = mapped_column(ForeignKey("zone.id"), nullable=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"), nullable=True)
    template_type: Mapped[str] = mapped_column(String(16), default="USER")
    os_type: Mapped[str | None] = mapped_column(String(255), nullable=True)
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    is_featured: Mapped[bool] = mapped_column(Boolean, default=False)
    is_ready: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str | None] = mapped_column(String(255), nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    checksum: Mapped[str | None] = mapped_column(String(255), nullable=True)
    unique_name: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    os_type_id: Mapped[int | None] = mapped_column(ForeignKey("guest_os.id"), nullable=True)
    bootable: Mapped[bool] = mapped_column(Boolean, default=True)
    physical_size: Mapped[int] = mapped_column(BigInteger, default=0)

    @property
    def is_iso(self) -> bool:
        return self.format == "ISO"


class TemplateStoreRef(Base):
    """A template's copy on one image store: its download's progress, then where it lies.

    `state`: Allocated (not started), Downloading, Ready, Failed (`status` names the reason;
    nothing is left on the store), or Destroying while it is deleted from the store."""

    __tablename__ = "template_store_ref"
    __table_args__ = (UniqueConstraint("template_id", "store_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("vm_template.id"), index=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("image_store.id"), index=True)
    zone_id: Mapped[int] = mapped_column(ForeignKey("zone.id"))
    state: Mapped[str] = mapped_column(String(32), default="Allocated")
    status: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    percent: Mapped[int] = mapped_column(Integer, default=0)
    downloaded_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    install_path: Mapped[str] = mapped_column(String(1024))
    physical_size: Mapped[int] = mapped_column(BigInteger, default=0)
    virtual_size: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class TemplatePoolRef(Base):
    """A template's cached copy on a primary pool, which root volumes are qcow2 overlays on.

    `state` Creating while it is copied, Ready once done. Its users are the live volumes with
    this template on this pool; it is deleted once it has none and the template is deleted."""

    __tablename__ = "template_spool_ref"
    __table_args__ = (UniqueConstraint("template_id", "pool_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("vm_template.id"), index=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("storage_pool.id"), index=True)
    state: Mapped[str] = mapped_column(String(32), default="Creating")
    volume_name: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class VmInstance(Entity, Base):
    """A guest. CPU and memory are copied from the offering when the guest is deployed, so
    capacity sums never depend on offerings that may change or be deleted later."""

    __tablename__ = "vm_instance"
    __table_args__ = (
        Index("ix_vm_instance_host_state", "host_id", "state"),
        Index("ix_vm_instance_account", "account_id", "removed"),
    )
    name: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    instance_name: Mapped[str] = mapped_column(String(255), index=True)
    state: Mapped[str] = mapped_column(String(32), default="Stopped")
    zone_id: Mapped[int] = mapped_column(ForeignKey("zone.id"))
    host_id: Mapped[int | None] = mapped_column(ForeignKey("host.id"), nullable=True)
    last_host_id: Mapped[int | None] = mapped_column(ForeignKey("host.id"), nullable=True)
    # While Migrating: the destination, whose capacity the guest holds as well.
    migration_host_id: Mapped[int | None] = mapped_column(ForeignKey("host.id"), nullable=True, index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    domain_id: Mapped[int] = mapped_column(ForeignKey("domain.id"))
    service_offering_id: Mapped[int] = mapped_column(ForeignKey("service_offering.id"))
    template_id: Mapped[int] = mapped_column(ForeignKey("vm_template.id"))
    hypervisor: Mapped[str] = mapped_column(String(32))
    cpu_number: Mapped[int] = mapped_column(Integer)
    cpu_speed: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    ha_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    mac_address: Mapped[str] = mapped_column(String(17))
    nic_uuid: Mapped[str] = mapped_column(String(36), default=new_uuid)
    state_changed: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    # Base64 user data as given at deploy, and the names of its SSH key pairs (comma list).
    user_data: Mapped[str | None] = mapped_column(Text, nullable=True)
    keypairs: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    # The guest's VNC password (services/console.py), encrypted at rest; set on its first start.
    vnc_password: Mapped[str | None] = mapped_column(Encrypted(255), nullable=True)


class Volume(Entity, Base):
    """A guest disk. `disk` is how a hypervisor reaches it (what the agent answered when it
    created it); `pool_id` is None until the first start places it."""

    __tablename__ = "volume"
    __table_args__ = (Index("ix_volume_pool", "pool_id", "removed"),)
    name: Mapped[str] = mapped_column(String(255))
    vm_id: Mapped[int | None] = mapped_column(ForeignKey("vm_instance.id"), nullable=True, index=True)
    zone_id: Mapped[int] = mapped_column(ForeignKey("zone.id"))
    pool_id: Mapped[int | None] = mapped_column(ForeignKey("storage_pool.id"), nullable=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    volume_type: Mapped[str] = mapped_column(String(16), default="ROOT")
    device_id: Mapped[int] = mapped_column(Integer, default=0)
    format: Mapped[str] = mapped_column(String(16), default="qcow2")
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(32), default="Allocated")
    disk: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # A data volume's offering (its size and storage tags); None for a root volume.
    disk_offering_id: Mapped[int | None] = mapped_column(ForeignKey("disk_offering.id"), nullable=True)
    # A root volume made as an overlay on a template's copy on its pool (TemplatePoolRef).
    template_id: Mapped[int | None] = mapped_column(ForeignKey("vm_template.id"), nullable=True, index=True)
    # When a data volume was attached to its VM (None while detached).
    attached: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class SshKeyPair(Entity, Base):
    """An SSH public key of an account. The private key of a generated pair is never stored."""

    __tablename__ = "ssh_keypair"
    __table_args__ = (UniqueConstraint("account_id", "name"),)
    name: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(128))
    public_key: Mapped[str] = mapped_column(Text)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domain.id"))


# --- resource limits -------------------------------------------------------------


class ResourceLimit(Base):
    """A limit set for one account or one domain (exactly one of the two) on one resource type;
    without a row the max.account.* / max.domain.* setting applies. -1: no limit."""

    __tablename__ = "resource_limit"
    __table_args__ = (Index("ix_resource_limit_owner", "account_id", "domain_id", "type"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    type: Mapped[int] = mapped_column(Integer)
    max: Mapped[int] = mapped_column(BigInteger)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"), nullable=True)
    domain_id: Mapped[int | None] = mapped_column(ForeignKey("domain.id"), nullable=True)


class ResourceCount(Base):
    """What one account or one domain (its accounts and subdomains together) uses of one type,
    changed in the transaction that changes the resource."""

    __tablename__ = "resource_count"
    __table_args__ = (Index("ix_resource_count_owner", "account_id", "domain_id", "type"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    type: Mapped[int] = mapped_column(Integer)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"), nullable=True)
    domain_id: Mapped[int | None] = mapped_column(ForeignKey("domain.id"), nullable=True)


# --- networks -----------------------------------------------------------------


class PhysicalNetwork(Entity, Base):
    __tablename__ = "physical_network"
    name: Mapped[str] = mapped_column(String(255))
    zone_id: Mapped[int] = mapped_column(ForeignKey("zone.id"))
    state: Mapped[str] = mapped_column(String(16), default="Disabled")
    vlan: Mapped[str | None] = mapped_column(String(255), nullable=True)
    tags: Mapped[str | None] = mapped_column(String(255), nullable=True)
    isolation_methods: Mapped[str | None] = mapped_column(String(255), nullable=True)
    broadcast_domain_range: Mapped[str] = mapped_column(String(16), default="ZONE")
    network_speed: Mapped[str | None] = mapped_column(String(32), nullable=True)


class TrafficType(Entity, Base):
    __tablename__ = "traffic_type"
    physical_network_id: Mapped[int] = mapped_column(ForeignKey("physical_network.id"))
    traffic_type: Mapped[str] = mapped_column(String(32))
    kvm_label: Mapped[str | None] = mapped_column(String(255), nullable=True)
    xen_label: Mapped[str | None] = mapped_column(String(255), nullable=True)
    vmware_label: Mapped[str | None] = mapped_column(String(255), nullable=True)
    vlan: Mapped[str | None] = mapped_column(String(255), nullable=True)


# --- configuration -------------------------------------------------------------


class ConfigValue(Base):
    """A configuration value: global (scope 'global', resource_id 0) or scoped to one resource."""

    __tablename__ = "config_value"
    __table_args__ = (UniqueConstraint("name", "scope", "resource_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    scope: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[int] = mapped_column(Integer, default=0)
    value: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    updated: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


# --- async jobs and events ---------------------------------------------------------


class AsyncJob(Entity, Base):
    __tablename__ = "async_job"
    __table_args__ = (Index("ix_async_job_status", "status", "id"),)
    command: Mapped[str] = mapped_column(String(255))
    cmd_class: Mapped[str] = mapped_column(String(255))
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    instance_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    instance_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # 0 pending, 1 succeeded, 2 failed, 3 cancelled (CloudStack's jobstatus)
    status: Mapped[int] = mapped_column(Integer, default=0)
    result_code: Mapped[int] = mapped_column(Integer, default=0)
    result_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    completed: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # Runs of the job so far: a job run again after a restart (attempts > 1) settles an agent
    # step whose outcome was not recorded by asking the host before repeating it.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Index of the job's next step, and the recorded outcomes of the steps before it
    # (services/steps.py); NULL for jobs that are one transaction.
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    step_results: Mapped[list | None] = mapped_column(JSON, nullable=True)
    # The management server (mshost.msid) running the job; a survivor takes the pending jobs
    # of a server found Down. NULL: not claimed yet (any server may run it).
    executing_msid: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)


class Event(Entity, Base):
    __tablename__ = "event"
    __table_args__ = (Index("ix_event_archived_created", "archived", "created"),)
    type: Mapped[str] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(16), default="INFO")
    state: Mapped[str] = mapped_column(String(16), default="Completed")
    description: Mapped[str] = mapped_column(Text)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"), nullable=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"), nullable=True)
    resource_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # What kind of resource `resource_uuid` names (VirtualMachine, Host...), from the type.
    resource_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    archived: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class Alert(Entity, Base):
    """Something an administrator must look at (services/alerts.py): CloudStack's alert type
    code and name, a one-line subject, where it happened; mailed once when mail is set up."""

    __tablename__ = "alert"
    __table_args__ = (Index("ix_alert_archived_created", "archived", "created"),)
    type: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(1024))
    content: Mapped[str | None] = mapped_column(Text, nullable=True)
    zone_id: Mapped[int | None] = mapped_column(ForeignKey("zone.id"), nullable=True)
    pod_id: Mapped[int | None] = mapped_column(ForeignKey("pod.id"), nullable=True)
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("cluster.id"), nullable=True)
    resource_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    archived: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    mailed: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class EnrollmentToken(Base):
    """A one-time agent enrollment token: only the SHA-256 digest of its secret is kept."""

    __tablename__ = "enrollment_token"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Epoch seconds: DOUBLE, since MySQL's FLOAT is single precision (minutes off at today's epoch).
    expires_at: Mapped[float] = mapped_column(Double)
    guid: Mapped[str | None] = mapped_column(String(255), nullable=True)
    note: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class SchemaInfo(Base):
    """Key/value facts about this installation (e.g. the management server id)."""

    __tablename__ = "schema_info"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(1024))


# --- management servers ------------------------------------------------------------


class ManagementServer(Entity, Base):
    """One management server (engine) on this database, CloudStack's `mshost`: each registers
    at start, heartbeats every cluster.heartbeat.interval and is found Down by a peer after
    cluster.heartbeat.threshold without one."""

    __tablename__ = "mshost"
    msid: Mapped[int] = mapped_column(BigInteger, unique=True)
    # Changes at every start: tells a restarted server from its previous run.
    run_id: Mapped[int] = mapped_column(BigInteger, default=0)
    name: Mapped[str] = mapped_column(String(255))
    # Where peers reach it (the engine-to-engine channel) and where agents connect.
    service_ip: Mapped[str] = mapped_column(String(64))
    service_port: Mapped[int] = mapped_column(Integer)
    agent_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="Up")
    last_update: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_start: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    last_stop: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    details: Mapped[dict] = mapped_column(JSON, default=dict)


class ManagementCa(Base):
    """The certificate authority every management server shares (agents' and engines'
    certificates chain to it); its key is encrypted with the key file."""

    __tablename__ = "management_ca"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cert_pem: Mapped[str] = mapped_column(Text)
    key_pem: Mapped[dict] = mapped_column(EncryptedJSON())
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class ApiCounter(Base):
    """API calls of one account in the current throttling window, counted by every server."""

    __tablename__ = "api_counter"
    account_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Epoch seconds the window started: DOUBLE (MySQL's FLOAT is single precision).
    window_start: Mapped[float] = mapped_column(Double)
    count: Mapped[int] = mapped_column(Integer, default=0)
