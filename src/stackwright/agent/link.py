"""The agent's connection to the engine: connect, register, ping, serve commands, reconnect.

While the engine is away the agent only retries; it never starts, stops or
otherwise touches guests on its own, so running VMs are unaffected by an
engine restart or a network cut.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from stackwright.agent.errors import AgentError
from stackwright.agent.handlers import Dispatcher
from stackwright.protocol.channel import Channel, ChannelClosed, RemoteError
from stackwright.protocol.framing import DEFAULT_MAX_FRAME
from stackwright.protocol.messages import Ping, RegisterAnswer, RegisterRequest

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connector = Callable[[], Awaitable[tuple[Streams, str]]]


class Backoff:
    """Exponential delays with jitter: each delay is drawn from [d/2, d], d doubling up to ``maximum``."""

    def __init__(self, initial: float = 2.0, maximum: float = 60.0, rng: random.Random | None = None):
        self.initial = initial
        self.maximum = max(maximum, initial)
        self.rng = rng or random.Random()
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return ceiling / 2 + self.rng.random() * ceiling / 2


@dataclass
class Registration:
    """What the agent says about itself when it registers (besides host info and VMs)."""

    guid: str
    zone: str = ""
    pod: str = ""
    cluster: str = ""
    private_network_device: str = ""
    public_network_device: str = ""
    guest_network_device: str = ""


LB_ALGORITHMS = ("static", "roundrobin", "shuffle")


def parse_endpoints(hosts: list[str] | str, port: int) -> list[tuple[str, int]]:
    """Engine addresses as `host` lists them (comma separated, each HOST or HOST:PORT, [V6]:PORT)."""
    if isinstance(hosts, str):
        hosts = hosts.split(",")
    endpoints = []
    for entry in (h.strip() for h in hosts):
        if not entry:
            continue
        host, sep, tail = entry.rpartition(":")
        if sep and tail.isdigit() and (host.endswith("]") or ":" not in host):
            if not 0 < int(tail) < 65536:
                raise ValueError(f"invalid port in engine address {entry!r}: expected 1-65535")
            endpoints.append((host.strip("[]"), int(tail)))
        else:
            endpoints.append((entry.strip("[]"), port))
    if not endpoints:
        raise ValueError("no engine address given")
    return endpoints


def ordered_endpoints(endpoints: list[tuple[str, int]], algorithm: str, key: str = "",
                      rng: random.Random | None = None) -> list[tuple[str, int]]:
    """The order an agent tries the engines in (its preferred one first), by
    indirect.agent.lb.algorithm: `static` as listed; `roundrobin` the list rotated by the
    agent's `key` (its guid), so agents spread over the engines evenly; `shuffle` at random."""
    if algorithm not in LB_ALGORITHMS:
        raise ValueError(f"unknown load-balancing algorithm {algorithm!r}; use one of {', '.join(LB_ALGORITHMS)}")
    endpoints = list(endpoints)
    if algorithm == "roundrobin" and endpoints:
        start = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % len(endpoints)
        endpoints = endpoints[start:] + endpoints[:start]
    elif algorithm == "shuffle":
        (rng or random.Random()).shuffle(endpoints)
    return endpoints


class EngineConnector:
    """Connects to the engines in the agent's order, one per call: the next one after a failure
    or a lost session; `prefer()` starts over at the preferred (first) one."""

    def __init__(self, endpoints: list[tuple[str, int]], ssl_context: ssl.SSLContext | None,
                 timeout: float = 10.0):
        self.endpoints = endpoints
        self.ssl_context = ssl_context
        self.timeout = timeout
        self._next = 0
        self.current: tuple[str, int] | None = None

    @property
    def preferred(self) -> tuple[str, int]:
        return self.endpoints[0]

    def prefer(self) -> None:
        self._next = 0

    async def __call__(self) -> tuple[Streams, str]:
        host, port = self.endpoints[self._next % len(self.endpoints)]
        self._next = (self._next + 1) % len(self.endpoints)
        endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.current = None
        async with asyncio.timeout(self.timeout):
            streams = await asyncio.open_connection(
                host, port, ssl=self.ssl_context, ssl_handshake_timeout=self.timeout if self.ssl_context else None
            )
        self.current = (host, port)
        return streams, endpoint

    async def reachable(self, endpoint: tuple[str, int]) -> bool:
        """Whether `endpoint` accepts a connection (and, with TLS, completes the handshake) now."""
        try:
            async with asyncio.timeout(self.timeout):
                _reader, writer = await asyncio.open_connection(
                    *endpoint, ssl=self.ssl_context,
                    ssl_handshake_timeout=self.timeout if self.ssl_context else None)
        except (OSError, TimeoutError, ssl.SSLError):
            return False
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass
        return True


def tcp_connector(
    hosts: list[str],
    port: int,
    ssl_context: ssl.SSLContext | None,
    timeout: float = 10.0,
    algorithm: str = "static",
    key: str = "",
) -> EngineConnector:
    """Connect to the engine hosts (HOST or HOST:PORT, `port` by default) in the order of
    `algorithm` (see `ordered_endpoints`), one host per call, moving on after a failure."""
    return EngineConnector(ordered_endpoints(parse_endpoints(hosts, port), algorithm, key), ssl_context, timeout)


class AgentLink:
    """Keeps the agent registered with an engine until `stop` is called."""

    def __init__(
        self,
        registration: Registration,
        dispatcher: Dispatcher,
        connector: Connector,
        backoff: Backoff | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        register_timeout: float = 30.0,
        check_interval: float = 0.0,
    ):
        self.registration = registration
        # indirect.agent.lb.check.interval: while connected to another engine than the preferred
        # one, look this often whether the preferred one is back, and return to it (0: never).
        self.check_interval = check_interval
        self.dispatcher = dispatcher
        self.connector = connector
        self.backoff = backoff or Backoff()
        self.max_frame = max_frame
        self.register_timeout = register_timeout
        self.host_id: str | None = None
        self.ping_interval: float | None = None
        self.registered = asyncio.Event()
        # Called with (ping interval, seconds until the answer) after every answered ping.
        self.on_ping_answer: Callable[[float, float], None] | None = None
        self._stopping = asyncio.Event()
        self._channel: Channel | None = None

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff until stopped."""
        while not self._stopping.is_set():
            try:
                (reader, writer), endpoint = await self.connector()
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                await self._pause(f"cannot connect to the engine: {_reason(exc)}")
                continue
            served = await self._serve(reader, writer, endpoint)
            if served:
                self.backoff.reset()
            if not self._stopping.is_set():
                await self._pause("connection to the engine lost")

    async def stop(self, reason: str = "agent shutting down") -> None:
        """Say goodbye to the engine and end `run`."""
        self._stopping.set()
        if self._channel is not None:
            await self._channel.close(reason)

    async def _pause(self, why: str) -> None:
        delay = self.backoff.next_delay()
        log.warning("%s; retrying in %.1f s", why, delay)
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, endpoint: str) -> bool:
        """One session; True when the host registered (the backoff then starts over)."""
        channel = Channel(reader, writer, peer=f"engine {endpoint}", on_request=self.dispatcher,
                          max_frame=self.max_frame)
        self._channel = channel
        reader_task = asyncio.create_task(channel.run())
        ping_task: asyncio.Task[None] | None = None
        try:
            if self._stopping.is_set():
                return False
            answer = await self._register(channel, endpoint)
            if answer is None:
                return False
            ping_task = asyncio.create_task(self._ping_loop(channel, answer.ping_interval))
            check_task = None
            if self.check_interval > 0 and isinstance(self.connector, EngineConnector):
                check_task = asyncio.create_task(self._return_to_preferred(channel))
            try:
                await channel.wait_closed()
            finally:
                if check_task is not None:
                    check_task.cancel()
                    await asyncio.gather(check_task, return_exceptions=True)
            level = logging.INFO if self._stopping.is_set() else logging.WARNING
            log.log(level, "session with engine %s ended: %s", endpoint, channel.close_reason)
            return True
        finally:
            self.registered.clear()
            if ping_task is not None:
                ping_task.cancel()
            await channel.close("agent session ended")
            await asyncio.gather(reader_task, *(t for t in [ping_task] if t), return_exceptions=True)
            self._channel = None

    async def _return_to_preferred(self, channel: Channel) -> None:
        """While connected to another engine than the preferred one: every check interval, when the
        preferred one accepts connections again, end this session and reconnect there."""
        connector = self.connector
        while not channel.closed:
            await asyncio.sleep(self.check_interval)
            if connector.current is None or connector.current == connector.preferred:
                return
            if await connector.reachable(connector.preferred):
                log.info("the preferred engine %s:%d is back; reconnecting to it", *connector.preferred)
                connector.prefer()
                await channel.close("returning to the preferred management server")
                return

    async def _register(self, channel: Channel, endpoint: str) -> RegisterAnswer | None:
        try:
            info = await self.dispatcher.call(self.dispatcher.context.hypervisor.host_info)
            vms = await self.dispatcher.call(self.dispatcher.context.vm_states)
            reg = self.registration
            request = RegisterRequest(
                guid=reg.guid, zone=reg.zone, pod=reg.pod, cluster=reg.cluster,
                host=info, vms=vms, agent_version=AGENT_VERSION,
                private_network_device=reg.private_network_device,
                public_network_device=reg.public_network_device,
                guest_network_device=reg.guest_network_device,
            )
            answer = await channel.request(request, self.register_timeout)
        except AgentError as exc:
            log.error("hypervisor not ready, not registering: %s", exc)
            return None
        except RemoteError as exc:
            log.error("engine %s refused registration: %s (%s)", endpoint, exc.message, exc.code)
            return None
        except ChannelClosed as exc:
            if self._stopping.is_set():
                return None
            log.error(
                "engine %s closed the session during registration (%s); if this repeats, the engine may not "
                "accept this host's certificate: see the engine log, or enroll again with "
                "stackwright-setup-agent --token <token> --force-enroll", endpoint, exc,
            )
            return None
        except TimeoutError:
            log.error("engine %s did not answer the registration within %g s", endpoint, self.register_timeout)
            return None
        assert isinstance(answer, RegisterAnswer)
        self.host_id = answer.host_id
        self.ping_interval = answer.ping_interval
        self.registered.set()
        log.info(
            "registered with engine %s as host %s (%s); ping interval %g s, %d VMs reported",
            endpoint, answer.host_id, answer.host_name or self.registration.guid, answer.ping_interval, len(vms),
        )
        return answer

    async def _ping_loop(self, channel: Channel, interval: float) -> None:
        """Ping every ``interval`` seconds with the VM states; a missed answer ends the session."""
        interval = max(interval, 0.05)
        # The first ping comes at a random point of the first interval: after an engine restart
        # thousands of agents register within seconds, and their pings must not stay in step.
        delay = random.uniform(0.1, 1.0) * interval
        while not channel.closed:
            await asyncio.sleep(delay)
            delay = interval
            try:
                ping = await self._ping_message()
                sent = time.monotonic()
                await channel.request(ping, timeout=max(2 * interval, 5.0))
                if self.on_ping_answer is not None:
                    self.on_ping_answer(interval, time.monotonic() - sent)
            except TimeoutError:
                await channel.close(f"engine did not answer a ping within {max(2 * interval, 5.0):g} s")
                return
            except ChannelClosed:
                return
            except RemoteError as exc:
                log.error("engine rejected a ping: %s (%s)", exc.message, exc.code)
                await channel.close(f"ping rejected: {exc.message}")
                return

    async def _ping_message(self) -> Ping:
        try:
            vms, io_paused = await self.dispatcher.call(self.dispatcher.context.guest_report)
            return Ping(vms=vms, io_paused=io_paused)
        except AgentError as exc:
            log.warning("cannot list VMs for the ping: %s", exc)
            return Ping(vms={}, vms_reported=False)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate check failed ({exc.verify_message}); is tls.ca.file the engine's CA?"
    return str(exc) or type(exc).__name__
