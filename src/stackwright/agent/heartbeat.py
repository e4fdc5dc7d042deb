"""stackwright-heartbeat: the host's heartbeat on each NFS primary pool it uses.

Runs beside the agent as a process of its own (a systemd unit of its own, docs/ha.md), so
that an agent that crashed or was restarted never looks like a dead host: every
`ha.heartbeat.interval` seconds it writes the file ``.stackwright-heartbeat-<guid>`` at the
root of every pool the agent listed in its pools file (`ha.pools.file`). When the engine
loses a host's agent, other hosts of the cluster read that file's age on the pool's own
clock (the `CheckHeartbeat` command): a fresh heartbeat means the host is alive.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from pathlib import Path

from stackwright.agent.config import DEFAULT_PROPERTIES, AgentConfig
from stackwright.agent.errors import AgentError
from stackwright.agent.handlers import read_pools
from stackwright.agent.storage import get_storage_driver

log = logging.getLogger("stackwright.heartbeat")


def beat_once(config: AgentConfig, storage: object) -> int:
    """Write the heartbeat on every listed pool; how many took it."""
    written = 0
    for pool in read_pools(config.pools_file):
        if pool.mode == "auto" and config.storage_mode != "auto":
            pool = dataclasses.replace(pool, mode=config.storage_mode)
        try:
            storage.write_heartbeat(pool, config.guid)
            written += 1
        except AgentError as e:
            log.warning("heartbeat on pool %s (%s) failed: %s", pool.uuid, pool.url, e)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stackwright-heartbeat", description=__doc__.splitlines()[0])
    parser.add_argument("--properties", type=Path, default=DEFAULT_PROPERTIES, help="agent.properties")
    parser.add_argument("--interval", type=float, help="seconds between heartbeats (default: ha.heartbeat.interval)")
    parser.add_argument("--once", action="store_true", help="write one heartbeat and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = AgentConfig.load(args.properties)
    except AgentError as e:
        print(f"stackwright-heartbeat: {e}", file=sys.stderr)
        return 2
    options = {"mount_root": config.storage_mount_dir} if config.storage_mount_dir else {}
    storage = get_storage_driver("nfs", **options)
    interval = args.interval or config.heartbeat_interval
    if args.once:
        return 0 if beat_once(config, storage) or not read_pools(config.pools_file) else 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("heartbeat of host %s every %ss on the pools listed in %s", config.guid, interval, config.pools_file)
    while not stop.is_set():
        beat_once(config, storage)
        stop.wait(interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
