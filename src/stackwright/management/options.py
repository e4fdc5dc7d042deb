"""Start-up options of the engine: a properties file plus command-line overrides.

Keys of the file (all optional), in the spirit of CloudStack's db.properties/server.properties:
  db.url         SQLAlchemy URL (sqlite:////var/lib/stackwright/cloud.db or mysql+pymysql://...)
  api.listen     HOST:PORT of the HTTP API (127.0.0.1:8080)
  agent.listen   HOST:PORT of the agent channel (0.0.0.0:8250)
  agent.tls      true/false: TLS on the agent channel (true)
  pki.dir        directory of the engine's certificate authority
  key.file       the key that encrypts stored credentials (default next to an SQLite
                 database, else /etc/cloudstack/management/key), written by
                 stackwright-setup-databases
  log.file       log file path
  log.level      DEBUG, INFO, WARNING
  api.workers    threads serving API requests
  jobs.workers   threads running async jobs
  api.cache.size answers of list commands kept until the database changes (256; 0: none;
                 SQLite only, since there the engine is the database's only writer; several
                 engines share a MySQL/MariaDB database, where nothing is cached)
  cluster.listen HOST:PORT of the channel other management servers forward agent calls
                 over (mutual TLS; default the agent channel's host, a free port: peers read
                 it from the database)
  cluster.address
                 the address peers reach that channel at (default: cluster.listen's host, or
                 this machine's address when that is 0.0.0.0)
  console.listen HOST:PORT of the console proxy's TLS listener, used when the global setting
                 consoleproxy.sslEnabled is true (default: the API's host, port 8443); without
                 TLS the console is served on the API's listener
  agent.reconnect.grace
                 seconds the agents of hosts served before a start have to reconnect
                 before their hosts are marked Down (60; at least ping.interval x ping.timeout)
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from .. import properties

DEFAULT_CONFIG = "/etc/cloudstack/management/server.properties"
DEFAULT_DB_URL = "sqlite:////var/lib/stackwright/cloud.db"
DEFAULT_LOG = "/var/log/cloudstack/management/management-server.log"
DEFAULT_PKI = "/var/lib/stackwright/pki"


@dataclass
class Options:
    db_url: str = DEFAULT_DB_URL
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    agent_host: str = "0.0.0.0"
    agent_port: int = 8250
    agent_tls: bool = True
    pki_dir: str = DEFAULT_PKI
    log_file: str = DEFAULT_LOG
    log_level: str = "INFO"
    api_workers: int = 8
    job_workers: int = 4
    api_cache_size: int = 256
    agent_reconnect_grace: float = 60.0
    cluster_host: str | None = None     # None: agent_host
    cluster_port: int = 0
    cluster_address: str | None = None
    console_host: str | None = None     # None: the API's host
    console_port: int = 8443
    config_file: str | None = None
    key_file: str | None = None     # None: persistence.crypto.default_key_file(db_url)


def split_address(text: str, default_host: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = default_host, text
    try:
        port = int(port)
    except ValueError:
        raise SystemExit(f"invalid address {text!r}: expected HOST:PORT") from None
    if not 0 < port < 65536:
        raise SystemExit(f"invalid port in {text!r}: expected 1-65535")
    return host.strip("[]") or default_host, port


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="stackwright-management",
        description="Stackwright management engine: serves the CloudStack API on /client/api.",
    )
    ap.add_argument("--config", help=f"properties file (default {DEFAULT_CONFIG} when it exists)")
    ap.add_argument("--db-url", help=f"database URL (default {DEFAULT_DB_URL})")
    ap.add_argument("--listen", help="HOST:PORT of the API (default 127.0.0.1:8080)")
    ap.add_argument("--agent-listen", help="HOST:PORT of the agent channel (default 0.0.0.0:8250)")
    ap.add_argument("--agent-plain", action="store_true",
                    help="serve the agent channel without TLS (insecure; for isolated test networks)")
    ap.add_argument("--console-listen", help="HOST:PORT of the console proxy over TLS, when consoleproxy.sslEnabled "
                                             "is true (default: the API's host, port 8443)")
    ap.add_argument("--pki-dir", help=f"directory of the certificate authority (default {DEFAULT_PKI})")
    ap.add_argument("--key-file", help="key file of the stored credentials (default next to an SQLite "
                                       "database, else /etc/cloudstack/management/key)")
    ap.add_argument("--log-file", help=f"log file (default {DEFAULT_LOG}); '-' logs to stderr only")
    ap.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    ap.add_argument("--api-workers", type=int)
    ap.add_argument("--job-workers", type=int)
    ap.add_argument("--api-cache-size", type=int,
                    help="answers of list commands kept until the database changes (default 256; 0: none)")
    ap.add_argument("--agent-reconnect-grace", type=float,
                    help="seconds agents have to reconnect after a start before their hosts are marked Down "
                         "(default 60; at least ping.interval x ping.timeout)")
    ap.add_argument("--cluster-listen",
                    help="HOST:PORT of the engine-to-engine channel (default: the agent channel's host, any free port)")
    ap.add_argument("--cluster-address", help="the address other management servers reach this one at")
    return ap


def load(argv: list[str] | None = None) -> Options:
    import os

    args = parser().parse_args(argv)
    config = args.config or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None)
    if args.config and not os.path.exists(args.config):
        raise SystemExit(f"configuration file {args.config} does not exist")
    values = properties.read(config) if config else {}
    o = Options(config_file=config)
    o.db_url = args.db_url or values.get("db.url") or o.db_url
    listen = args.listen or values.get("api.listen")
    if listen:
        o.listen_host, o.listen_port = split_address(listen, "127.0.0.1")
    agent = args.agent_listen or values.get("agent.listen")
    if agent:
        o.agent_host, o.agent_port = split_address(agent, "0.0.0.0")
    console = args.console_listen or values.get("console.listen")
    if console:
        o.console_host, o.console_port = split_address(console, o.listen_host)
    if args.agent_plain:
        o.agent_tls = False
    elif "agent.tls" in values:
        o.agent_tls = values["agent.tls"].lower() != "false"
    cluster = args.cluster_listen or values.get("cluster.listen")
    if cluster:
        o.cluster_host, o.cluster_port = split_address(cluster, o.agent_host)
    o.cluster_address = args.cluster_address or values.get("cluster.address") or None
    o.pki_dir = args.pki_dir or values.get("pki.dir") or o.pki_dir
    o.key_file = args.key_file or values.get("key.file") or None
    o.log_file = args.log_file or values.get("log.file") or o.log_file
    o.log_level = args.log_level or values.get("log.level", o.log_level).upper()
    o.api_workers = args.api_workers or int(values.get("api.workers", o.api_workers))
    o.job_workers = args.job_workers or int(values.get("jobs.workers", o.job_workers))
    o.api_cache_size = (args.api_cache_size if args.api_cache_size is not None
                        else int(values.get("api.cache.size", o.api_cache_size)))
    if o.api_cache_size < 0:
        raise SystemExit(f"invalid api.cache.size {o.api_cache_size}: expected 0 or more")
    grace = (args.agent_reconnect_grace if args.agent_reconnect_grace is not None
             else values.get("agent.reconnect.grace", o.agent_reconnect_grace))
    try:
        o.agent_reconnect_grace = float(grace)
    except ValueError:
        o.agent_reconnect_grace = math.nan
    if not (math.isfinite(o.agent_reconnect_grace) and o.agent_reconnect_grace >= 0):
        raise SystemExit(f"invalid agent.reconnect.grace {grace}: expected a number of seconds, 0 or more")
    return o
