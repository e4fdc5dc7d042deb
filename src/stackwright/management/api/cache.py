"""Answers of cacheable read-only commands, kept until the database next changes.

On SQLite the engine is the database's only writer, and every write goes through
`Database.transaction`, which counts committed write transactions. An answer is stored
with the count seen before it was computed and served only while the count is unchanged,
so whatever a request, a job or an agent update commits is seen by the very next request.
On MySQL/MariaDB other engines or tools may write too, so nothing is cached there.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..context import Principal
    from ..api.registry import Command
    from ..persistence.db import Database

    # (user id, command name, the (name, value) pairs of its parameters the request carries)
    Token: TypeAlias = tuple[int, str, tuple[tuple[str, str], ...]]


class ResponseCache:
    def __init__(self, db: Database, size: int = 256):
        self._db = db
        self.enabled = db.is_sqlite and size > 0
        self._size = size
        self._entries: OrderedDict[Token, tuple[int, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def token(principal: Principal, cmd: Command, raw: Mapping[str, str]) -> Token:
        """What an answer depends on besides the data: the caller, the command and exactly the
        values of the parameters the command declares, as its parser reads them. A parameter
        the command does not know leaves the answer unchanged, and so leaves the token alone."""
        return principal.user_id, cmd.name, cmd.declared.used(raw)

    @property
    def generation(self) -> int:
        return self._db.write_generation

    def get(self, token: Token) -> bytes | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            if entry[0] != self._db.write_generation:
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return entry[1]

    def put(self, token: Token, generation: int, data: bytes) -> None:
        """Keep `data`, computed from the database as of `generation`, unless it changed since."""
        with self._lock:
            if generation != self._db.write_generation:
                return
            self._entries[token] = (generation, data)
            self._entries.move_to_end(token)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
