"""Simulated agents: the real agent link and handlers over the simulator driver.

`SimulatedAgent` runs inside another process: the engine uses it for hosts of
hypervisor ``Simulator`` (connected through ``AgentLinkServer.connect_local``,
so they go through the same sessions as real agents) and scale tests use it to
hold many hosts in one process.

Run as a module it is a bounded load generator against a running engine::

    python -m stackwright.simulation.agent --host 10.0.0.1,10.0.0.2:8250 --port 8250 \\
        --count 200 --duration 60 --ca-dir /var/lib/stackwright/ca

With TLS (the default) it issues each simulated host a client certificate from
the engine's CA directory, so it must run where that directory is readable.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import signal
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# `Registration` and `SimulatorDriver` are what a `SimulatedAgent` is built from; the engine,
# which never imports the agent package, takes them from here.
from stackwright.agent.handlers import Dispatcher, HandlerContext
from stackwright.agent.hypervisor.simulator import SimulatorDriver
from stackwright.agent.link import (
    LB_ALGORITHMS,
    AgentLink,
    Backoff,
    Connector,
    Registration,
    Streams,
    parse_endpoints,
    tcp_connector,
)
from stackwright.agent.storage.simulator import SimulatorStorageDriver
from stackwright.protocol.pki import CertificateAuthority, CertificateError, client_context, use_small_tls_buffers

log = logging.getLogger(__name__)

MAX_DURATION = 3600.0


class SimulatedAgent:
    """One simulated host: simulator driver + dispatcher + agent link."""

    def __init__(
        self,
        registration: Registration,
        connector: Connector,
        driver: SimulatorDriver | None = None,
        backoff: Backoff | None = None,
        workers: int = 0,
        check_interval: float = 0.0,
    ):
        self.driver = driver or SimulatorDriver(hostname=registration.guid)
        self.storage = SimulatorStorageDriver()
        self.dispatcher = Dispatcher(HandlerContext(self.driver, storage_factory=lambda: self.storage),
                                     workers=workers, host_label=registration.guid)
        self.link = AgentLink(registration, self.dispatcher, connector, backoff or Backoff(0.5, 5.0),
                              check_interval=check_interval)
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def local(
        cls,
        connect_local: Callable[[str], Awaitable[Streams]],
        registration: Registration,
        driver: SimulatorDriver | None = None,
    ) -> SimulatedAgent:
        """An agent attached in-process, e.g. ``SimulatedAgent.local(server.connect_local, Registration(...))``."""

        async def connect() -> tuple[Streams, str]:
            return await connect_local(registration.guid), "in-process"

        return cls(registration, connect, driver)

    @property
    def host_id(self) -> str | None:
        return self.link.host_id

    async def start(self, wait_registered: float | None = None) -> None:
        """Start the link; optionally wait (seconds) until the engine accepted the host."""
        self._task = asyncio.create_task(self.link.run(), name=f"simulated-agent-{self.link.registration.guid}")
        if wait_registered is not None:
            async with asyncio.timeout(wait_registered):
                await self.link.registered.wait()

    async def stop(self) -> None:
        await self.link.stop("simulated host stopped")
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self.dispatcher.close()


# -- load generator -----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stackwright.simulation.agent", description="Open N simulated agent connections to an engine."
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="engine address(es), comma separated, each HOST or HOST:PORT (as agent.properties host)")
    parser.add_argument("--port", type=int, default=8250, help="port of the addresses given without one")
    parser.add_argument("--lb-algorithm", choices=LB_ALGORITHMS, default="static",
                        help="order the engines are tried in (indirect.agent.lb.algorithm)")
    parser.add_argument("--lb-check-interval", type=float, default=0.0,
                        help="seconds between looks for the preferred engine when away from it (0: never)")
    parser.add_argument("--count", type=int, default=10, help="simulated hosts (1..20000)")
    parser.add_argument("--duration", type=float, default=30.0, help=f"seconds to stay connected (max {MAX_DURATION:g})")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds over which connections open")
    parser.add_argument("--ca-dir", type=Path, help="engine CA directory (TLS); omit with --no-tls")
    parser.add_argument("--no-tls", action="store_true", help="the engine listens without TLS")
    parser.add_argument("--zone", default="")
    parser.add_argument("--pod", default="")
    parser.add_argument("--cluster", default="")
    parser.add_argument("--guid-prefix", default="sim-load")
    parser.add_argument("--cpus", type=int, default=8)
    parser.add_argument("--memory-mb", type=int, default=16384)
    return parser


def _tls_contexts(ca_dir: Path, guids: list[str]) -> list[ssl.SSLContext]:
    try:
        ca = CertificateAuthority.load(ca_dir)
    except CertificateError as exc:
        raise SystemExit(f"cannot load the engine CA: {exc}") from None
    contexts = []
    # ssl loads keys only from files: each one passes through a private scratch file that
    # is overwritten at once (no fsync; nothing here needs to survive a crash).
    with tempfile.TemporaryDirectory(prefix="sw-load-") as scratch:
        key_file, cert_file = Path(scratch) / "k.pem", Path(scratch) / "c.pem"
        for path in (key_file, cert_file):
            path.touch(mode=0o600)
        for guid in guids:
            key_pem, cert_pem = ca.issue_client_cert(guid, days=2)
            key_file.write_bytes(key_pem)
            cert_file.write_bytes(cert_pem)
            contexts.append(client_context(ca.cert_path, cert_file, key_file))
    return contexts


async def _load(args: argparse.Namespace) -> dict[str, object]:
    guids = [f"{args.guid_prefix}-{index:05d}" for index in range(args.count)]
    contexts: list[ssl.SSLContext | None]
    if args.no_tls:
        contexts = [None] * args.count
    else:
        contexts = await asyncio.to_thread(_tls_contexts, args.ca_dir, guids)
    agents = []
    for index, (guid, context) in enumerate(zip(guids, contexts, strict=True)):
        registration = Registration(guid=guid, zone=args.zone, pod=args.pod, cluster=args.cluster)
        # A distinct loopback label per simulated host; nothing ever connects to it.
        label = str(ipaddress.IPv4Address("127.64.0.1") + index)
        driver = SimulatorDriver(hostname=guid, cpus=args.cpus, memory_mb=args.memory_mb, private_ip=label)
        connector = tcp_connector(args.host.split(","), args.port, context, algorithm=args.lb_algorithm, key=guid)
        agents.append(SimulatedAgent(registration, connector, driver, check_interval=args.lb_check_interval))
    # Ping round trips, by the ping interval the engine gave at registration.
    round_trips: dict[float, list[float]] = {}

    def answered(interval: float, seconds: float) -> None:
        round_trips.setdefault(interval, []).append(seconds)

    for agent in agents:
        agent.link.on_ping_answer = answered
    started = time.monotonic()
    deadline = started + args.duration
    registered_at: list[float] = []

    async def track(agent: SimulatedAgent, delay: float) -> None:
        await asyncio.sleep(delay)
        opened = time.monotonic()
        await agent.start()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            async with asyncio.timeout(remaining):
                await agent.link.registered.wait()
            registered_at.append(time.monotonic() - opened)
        except TimeoutError:
            pass

    step = args.ramp / max(1, args.count)
    trackers = [asyncio.create_task(track(agent, index * step)) for index, agent in enumerate(agents)]
    # SIGTERM or SIGINT end the run early, still with its summary.
    finish = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, finish.set)
    try:
        await asyncio.wait_for(finish.wait(), max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        pass
    connected_at_end = sum(1 for agent in agents if agent.link.registered.is_set())
    for task in trackers:
        task.cancel()
    await asyncio.gather(*trackers, return_exceptions=True)
    await asyncio.gather(*(agent.stop() for agent in agents), return_exceptions=True)
    latencies = sorted(registered_at)
    pings = {}
    for interval, samples in sorted(round_trips.items()):
        samples.sort()
        pings[f"{interval:g}"] = {
            "answered": len(samples),
            "rtt_p50_ms": round(1000 * samples[len(samples) // 2], 2),
            "rtt_p99_ms": round(1000 * samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2),
        }
    return {
        "pings_by_interval_s": pings,
        "count": args.count,
        "duration_s": round(time.monotonic() - started, 2),
        "registered": len(latencies),
        "connected_at_end": connected_at_end,
        "register_p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
        "register_max_ms": round(1000 * latencies[-1], 1) if latencies else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 1 <= args.count <= 20000:
        print("--count must be between 1 and 20000", file=sys.stderr)
        return 2
    if not 0 < args.duration <= MAX_DURATION:
        print(f"--duration must be between 0 and {MAX_DURATION:g} seconds", file=sys.stderr)
        return 2
    try:
        parse_endpoints(args.host, args.port)
    except ValueError as exc:
        print(f"--host {args.host!r}: {exc}", file=sys.stderr)
        return 2
    if not args.no_tls and args.ca_dir is None:
        print("pass --ca-dir (the engine's CA directory) or --no-tls", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    use_small_tls_buffers()  # thousands of connections in one process
    print(json.dumps(asyncio.run(_load(args)), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
