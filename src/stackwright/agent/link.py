"""The agent's connection to the engine: connect, register, ping, serve commands, reconnect.

While the engine is away the agent only retries; it never starts, stops or
otherwise touches guests on its own, so running VMs are unaffected by an
engine restart or a network cut.
"""

from __future__ import annotations

import asyncio
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


def tcp_connector(
    hosts: list[str],
    port: int,
    ssl_context: ssl.SSLContext | None,
    timeout: float = 10.0,
) -> Connector:
    """Connect to the engine hosts in turn, one host per call (round robin)."""
    state = {"next": 0}

    async def connect() -> tuple[Streams, str]:
        host = hosts[state["next"] % len(hosts)]
        state["next"] += 1
        endpoint = f"{host}:{port}"
        async with asyncio.timeout(timeout):
            streams = await asyncio.open_connection(
                host, port, ssl=ssl_context, ssl_handshake_timeout=timeout if ssl_context else None
            )
        return streams, endpoint

    return connect


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
    ):
        self.registration = registration
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
            await channel.wait_closed()
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
            return Ping(vms=await self.dispatcher.call(self.dispatcher.context.vm_states))
        except AgentError as exc:
            log.warning("cannot list VMs for the ping: %s", exc)
            return Ping(vms={}, vms_reported=False)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate check failed ({exc.verify_message}); is tls.ca.file the engine's CA?"
    return str(exc) or type(exc).__name__
