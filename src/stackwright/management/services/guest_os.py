"""The catalogue of guest operating systems a template declares (listOsTypes, listOsCategories).

The categories and names are CloudStack's own (its `guest_os` and `guest_os_category`
tables); `seed()` adds the missing ones, so an installation keeps the ids it handed out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from ..persistence.models import GuestOs, GuestOsCategory

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

CATALOGUE: dict[str, tuple[str, ...]] = {
    "CentOS": (
        "CentOS 5.6 (64-bit)", "CentOS 6.10 (64-bit)", "CentOS 7", "CentOS 8", "CentOS Stream 9",
    ),
    "Debian": (
        "Debian GNU/Linux 9 (64-bit)", "Debian GNU/Linux 10 (64-bit)", "Debian GNU/Linux 11 (64-bit)",
        "Debian GNU/Linux 12 (64-bit)",
    ),
    "Oracle": ("Oracle Linux 7", "Oracle Linux 8", "Oracle Linux 9"),
    "RedHat": (
        "Red Hat Enterprise Linux 7", "Red Hat Enterprise Linux 8", "Red Hat Enterprise Linux 9",
    ),
    "SUSE": ("SUSE Linux Enterprise Server 12 (64-bit)", "SUSE Linux Enterprise Server 15 (64-bit)",
             "openSUSE Leap 15"),
    "Windows": (
        "Windows 10 (64-bit)", "Windows 11 (64-bit)", "Windows Server 2016 (64-bit)",
        "Windows Server 2019 (64-bit)", "Windows Server 2022 (64-bit)",
    ),
    "Ubuntu": (
        "Ubuntu 18.04 LTS", "Ubuntu 20.04 LTS", "Ubuntu 22.04 LTS", "Ubuntu 24.04 LTS",
    ),
    "Rocky": ("Rocky Linux 8", "Rocky Linux 9"),
    "AlmaLinux": ("AlmaLinux 8", "AlmaLinux 9"),
    "Unix": ("FreeBSD 12 (64-bit)", "FreeBSD 13 (64-bit)", "FreeBSD 14 (64-bit)"),
    "Other": ("Other (32-bit)", "Other (64-bit)", "Other Linux (64-bit)", "Other PV (64-bit)"),
    "None": (),
}


def seed(session: Session) -> list[str]:
    """Add the categories and OS types that are missing; returns the names added."""
    categories = {c.name: c for c in session.execute(select(GuestOsCategory)).scalars()}
    known = set(session.execute(select(GuestOs.display_name)).scalars())
    added = []
    for category_name, names in CATALOGUE.items():
        category = categories.get(category_name)
        if category is None:
            category = categories[category_name] = GuestOsCategory(name=category_name)
            session.add(category)
            session.flush()
            added.append(category_name)
        for name in names:
            if name not in known:
                session.add(GuestOs(category_id=category.id, display_name=name))
                added.append(name)
    session.flush()
    return added


def by_name(session: Session, name: str) -> GuestOs | None:
    return session.execute(select(GuestOs).where(GuestOs.display_name == name)).scalar_one_or_none()
