"""Every API call is checked against the caller's role.

A role's rules are compiled once per role version (services.roles.compile_policy) into the
set of commands it may call, so a request costs a dictionary and a set lookup. The engine
drops its compiled roles when one of its own commands changes a role or an account's role
(after that transaction commits), so the change holds from the next request; a change made
by another engine on the same database is seen once the entry is older than TTL seconds,
when one query of the role's version tells whether to compile it again.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..errors import UnsupportedAction
from ..persistence.models import Role
from ..services.roles import Policy, compile_policy, load_rules
from .registry import REGISTRY

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sqlalchemy.orm import Session

    from ..context import Principal


def authorized_types() -> Mapping[str, frozenset[str]]:
    """Each command's name and the role types it is declared for."""
    return {name: cmd.authorized for name, cmd in REGISTRY.items() if not cmd.login_free}


def refused(command: str, account_name: str | None) -> UnsupportedAction:
    """CloudStack's answer (432) to a command the caller's role does not allow."""
    return UnsupportedAction(
        f"The API [{command}] does not exist or is not available for the account {account_name or ''}.".replace(
            " .", "."))


class RoleCache:
    """Role id -> its compiled Policy."""

    TTL = 5.0

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Policy, float]] = {}
        self._lock = threading.Lock()
        # Grows with every invalidation: a policy read before one is not kept after it.
        self._generation = 0

    def fresh(self, role_id: int) -> Policy | None:
        """The policy of `role_id` if checked less than TTL seconds ago, else None."""
        entry = self._entries.get(role_id)
        if entry is not None and time.monotonic() - entry[1] < self.TTL:
            return entry[0]
        return None

    def policy(self, session: Session, role_id: int) -> Policy | None:
        """The current policy of `role_id`, or None when the role does not exist (any more)."""
        policy = self.fresh(role_id)
        if policy is not None:
            return policy
        now, generation = time.monotonic(), self._generation
        row = session.execute(select(Role).where(Role.id == role_id, Role.removed.is_(None))).scalar_one_or_none()
        if row is None:
            return None
        entry = self._entries.get(role_id)
        if entry is not None and entry[0].version == row.version:
            policy = entry[0]
        else:
            policy = compile_policy(row, load_rules(session, role_id), authorized_types())
        with self._lock:
            if generation == self._generation:
                self._entries[role_id] = (policy, now)
        return policy

    def allows(self, session: Session, principal: Principal, command: str) -> bool:
        policy = self.policy(session, principal.role_id)
        return policy is not None and policy.allows(command)

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
