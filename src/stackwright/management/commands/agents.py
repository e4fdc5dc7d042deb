"""Agent enrollment: one-time tokens that let a host's agent obtain its certificate.

Not part of Apache CloudStack's API (which provisions agent certificates over SSH); an
operator or the `cs_agent` module asks for a token here and hands it to
`stackwright-setup-agent --token`. The token is shown once; the engine keeps only a digest.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from ..api.params import Integer, Param, String
from ..api.registry import api_command
from ..errors import InvalidParameterValue
from ..formatting import compact, date

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..context import Context

MAX_TTL = 7 * 24 * 3600


@api_command("createAgentEnrollmentToken", response="agentenrollmenttoken", readonly=True, since="stackwright-0.1",
             params=[
                 Param("ttl", Integer(), default=3600,
                       description="seconds the token stays valid (default 3600, at most 604800)"),
                 Param("guid", String(), description="only the agent with this host guid may use the token"),
                 Param("description", String(), description="a note kept with the token"),
             ],
             fields=(("token", "the one-time token (shown once)"),
                     ("expires", "when the token expires", "date"),
                     ("cafingerprint", "SHA-256 fingerprint of the engine's CA certificate")))
def create_agent_enrollment_token(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Issues a one-time token with which a host agent enrolls and receives its certificate."""
    if not 60 <= p.ttl <= MAX_TTL:
        raise InvalidParameterValue(f"ttl must be between 60 and {MAX_TTL} seconds")
    token = ctx.agents.issue_token(p.ttl, guid=p.guid, note=p.description or "")
    expires = dt.datetime.fromtimestamp(time.time() + p.ttl, dt.timezone.utc)
    return compact({"token": token, "expires": date(expires), "guid": p.guid,
                    "cafingerprint": ctx.agents.ca_fingerprint})
