"""`stackwright-management`: the engine's daemon."""

from __future__ import annotations

import asyncio
import gc
import logging
import logging.handlers
import os
import resource
import signal
import socket
import ssl
import sys
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from . import options as optionslib
from .api.app import make_app
from .api.console import add_console_routes
from .agentlink.channel import AgentChannel
from .engine import Engine
from .persistence.crypto import KeyFileError
from .persistence.db import redact_url
from .redaction import PrivateFileHandler, RedactingFormatter

if TYPE_CHECKING:
    from .options import Options

log = logging.getLogger("stackwright.management")


def setup_logging(log_file: str, level: str | int) -> None:
    fmt = RedactingFormatter("%(asctime)s %(levelname)s [%(name)s] (%(threadName)s) %(message)s")
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(fmt)
    root.addHandler(stderr)
    if log_file and log_file != "-":
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handler = PrivateFileHandler(log_file)
        handler.setFormatter(fmt)
        root.addHandler(handler)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(_malformed_http_in_one_line)


def _malformed_http_in_one_line(record: logging.LogRecord):
    """A request the HTTP parser refuses (a line over 8 kB, bad syntax) is the client's fault and
    answered 400 by the server: logged as one line, without a traceback."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, HttpProcessingError):
        record.msg, record.args = "refused a malformed HTTP request: %s", (str(error).splitlines()[0][:200],)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def bind_peer_socket(opts: Options) -> socket.socket:
    """The engine-to-engine listener's socket, bound before the engine registers (its port goes
    into mshost); `opts.cluster_port` becomes the bound port."""
    host = opts.cluster_host or opts.agent_host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, opts.cluster_port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    opts.cluster_port = sock.getsockname()[1]
    return sock


async def serve(opts: Options, engine: Engine, peer_socket: socket.socket | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    app = make_app(engine, workers=opts.api_workers)
    consoles = add_console_routes(app, engine)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, opts.listen_host, opts.listen_port, reuse_address=True)
    await site.start()
    channel = AgentChannel(engine, opts, peer_socket)
    try:
        await channel.start()
    except OSError as e:
        await runner.cleanup()
        raise OSError(f"agent channel on {opts.agent_host}:{opts.agent_port}: {e.strerror or e}") from e
    engine.gateway.attach(channel)
    if consoles:
        try:
            engine.console_endpoint = await serve_consoles(opts, engine, runner, channel)
        except OSError as e:
            await runner.cleanup()
            await channel.close()
            raise OSError(f"console proxy on {opts.console_host or opts.listen_host}:{opts.console_port}: "
                          f"{e.strerror or e}") from e
    log.info(
        "management engine up: API http://%s:%d/client/api, database %s",
        opts.listen_host, opts.listen_port, redact_url(opts.db_url),
    )
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()
    engine.gateway.detach()
    await channel.close()


# Container allocations (net of those freed) between two passes of the cycle collector over
# the youngest generation (Python's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def advertised(engine: Engine, listen_host: str) -> str:
    """The address a console URL names for a listener on `listen_host`: that address, or the
    management server's (the `host` setting agents use) when it listens on every address."""
    if listen_host in ("", "0.0.0.0", "::"):
        return next((n.strip() for n in (engine.settings.get("host") or "").split(",") if n.strip()), "localhost")
    return listen_host


async def serve_consoles(opts: Options, engine: Engine, runner: web.AppRunner,
                         channel: AgentChannel) -> tuple[str, str, int]:
    """Where the console proxy is served: on the API's listener, or over TLS on a listener of
    its own (console.listen) with the engine's certificate when consoleproxy.sslEnabled is true."""
    if not engine.settings.typed("consoleproxy.sslEnabled"):
        log.info("console proxy on the API listener (consoleproxy.sslEnabled is false)")
        return "http", advertised(engine, opts.listen_host), opts.listen_port
    host = opts.console_host or opts.listen_host
    names = {advertised(engine, host)}
    domain = engine.settings.get("consoleproxy.url.domain")
    if domain and not domain.startswith("*."):
        names.add(domain)
    cert, key = channel.server_certificate(names)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    site = web.TCPSite(runner, host, opts.console_port, ssl_context=context, reuse_address=True)
    await site.start()
    log.info("console proxy over TLS on %s:%d", host, opts.console_port)
    return "https", advertised(engine, host), opts.console_port


# Enough descriptors for every agent connection plus the API's, the database's and the logs'.
OPEN_FILES_WANTED = 65536


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files towards the hard limit.

    Each connected agent holds one socket; with the usual soft limit of 1024 (systemd's
    default, and most shells') the engine would refuse agents beyond about a thousand."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, wanted, e)
    if soft != resource.RLIM_INFINITY and soft < 4096:
        log.warning("open-file limit is %d: the engine can hold at most about %d agent connections; "
                    "raise the hard limit (LimitNOFILE= in the systemd unit, ulimit -Hn)", soft, soft - 200)
    return soft


def main(argv: list[str] | None = None) -> int:
    opts = optionslib.load(argv)
    setup_logging(opts.log_file, opts.log_level)
    raise_open_file_limit()
    try:
        peer_socket = bind_peer_socket(opts)
    except OSError as e:
        log.error("cannot listen for other management servers on %s:%d: %s",
                  opts.cluster_host or opts.agent_host, opts.cluster_port, e.strerror or e)
        return 1
    try:
        engine = Engine(opts)
    except KeyFileError as e:
        log.error("cannot start: %s", e)
        return 1
    # The agent channel starts after the job workers: jobs resumed at start wait for it.
    engine.gateway.expect()
    try:
        engine.start()
    except Exception as e:
        log.error("cannot start: %s", e)
        return 1
    # What start-up loaded (modules, mappers, compiled statements) lives as long as the
    # process: keep it out of the collector's full passes, which otherwise stall requests.
    gc.freeze()
    # A list answer builds tens of thousands of short-lived containers (a page of 500 hosts:
    # about 20,000), nearly all freed by reference counting: with the default threshold of 700
    # the young generation would be scanned some thirty times per such request, and the older
    # ones far more often than their garbage warrants.
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
    try:
        asyncio.run(serve(opts, engine, peer_socket))
    except OSError as e:
        log.error("cannot listen: %s", e)
        return 1
    finally:
        engine.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
