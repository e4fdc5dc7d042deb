"""``stackwright-agent``: the host agent process.

Runs in the foreground (a service manager or the kvm_host role daemonises
it), logs to /var/log/cloudstack/agent/agent.log unless told otherwise, and
exits on SIGTERM/SIGINT after telling the engine goodbye.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys
from pathlib import Path

from stackwright.agent.config import DEFAULT_LOG_FILE, DEFAULT_PROPERTIES, AgentConfig
from stackwright.agent.errors import AgentError, ConfigError
from stackwright.agent.handlers import Dispatcher, HandlerContext
from stackwright.agent.hypervisor import get_driver
from stackwright.agent.link import AgentLink, Backoff, Registration, tcp_connector
from stackwright.agent.storage import get_storage_driver
from stackwright.protocol.pki import client_context

log = logging.getLogger("stackwright.agent")

LOG_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stackwright-agent", description="Stackwright host agent.")
    parser.add_argument("--properties", type=Path, default=DEFAULT_PROPERTIES, help="agent.properties path")
    parser.add_argument("--log-file", type=Path, default=DEFAULT_LOG_FILE, help="log file ('-' for stderr)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def setup_logging(log_file: Path, level: str) -> None:
    if str(log_file) == "-":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(log_file)
        except OSError as exc:
            raise ConfigError(f"cannot open log file {log_file}: {exc.strerror}; pass --log-file") from None
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def build_dispatcher(config: AgentConfig) -> Dispatcher:
    if config.hypervisor_driver == "simulator":
        driver = get_driver(
            "simulator", cpus=config.simulator_cpus, cpu_mhz=config.simulator_cpu_mhz,
            memory_mb=config.simulator_memory_mb,
        )
    else:
        driver = get_driver(
            "libvirt", uri=config.libvirt_uri, private_device=config.private_network_device or None,
            accel=None if config.guest_accel == "auto" else config.guest_accel,
        )
    storage_options = {"mount_root": config.storage_mount_dir} if config.storage_mount_dir else {}
    context = HandlerContext(
        driver, storage_factory=lambda: get_storage_driver("nfs", **storage_options), storage_mode=config.storage_mode,
        pools_file=config.pools_file,
    )
    return Dispatcher(context, workers=config.workers, host_label=config.guid)


def build_ssl_context(config: AgentConfig) -> ssl.SSLContext | None:
    if not config.tls:
        log.warning("TLS is disabled (tls.enabled=false): the engine is not authenticated and traffic is plain text")
        return None
    problems = config.tls_problems()
    if problems:
        raise ConfigError(
            "; ".join(problems) + ". Enroll this host first: stackwright-setup-agent --token <token from the engine>"
        )
    try:
        return client_context(config.ca_file, config.cert_file, config.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"cannot load the agent's TLS files ({config.cert_file}, {config.key_file}, {config.ca_file}): {exc}; "
            "enroll again with stackwright-setup-agent --token <token> --force-enroll"
        ) from None


async def serve(config: AgentConfig) -> None:
    ssl_context = build_ssl_context(config)
    dispatcher = build_dispatcher(config)
    link = AgentLink(
        Registration(
            guid=config.guid, zone=config.zone, pod=config.pod, cluster=config.cluster,
            private_network_device=config.private_network_device,
            public_network_device=config.public_network_device,
            guest_network_device=config.guest_network_device,
        ),
        dispatcher,
        tcp_connector(config.hosts, config.port, ssl_context, algorithm=config.lb_algorithm, key=config.guid),
        Backoff(config.backoff_initial, config.backoff_max),
        check_interval=config.lb_check_interval,
    )
    loop = asyncio.get_running_loop()
    received: list[int] = []
    stop_requested = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda s=signum: (received.append(s), stop_requested.set()))

    async def stop_on_signal() -> None:
        await stop_requested.wait()
        log.info("received %s; shutting down", signal.Signals(received[0]).name)
        await link.stop("agent shutting down")

    stopper = asyncio.create_task(stop_on_signal())
    log.info(
        "agent %s starting: engine %s port %s, %s driver, %s", config.guid, ",".join(config.hosts), config.port,
        config.hypervisor_driver, "TLS" if ssl_context else "plain TCP",
    )
    try:
        await link.run()
    finally:
        stopper.cancel()
        dispatcher.close()
    log.info("agent %s stopped", config.guid)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        setup_logging(args.log_file, args.log_level)
        config = AgentConfig.load(args.properties)
        asyncio.run(serve(config))
    except AgentError as exc:
        log.error("%s", exc)
        print(f"stackwright-agent: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
