"""hub-controller: what ryu-manager is to Ryu apps, for the hub.

One process: configuration, the embedded store, the hub core's worker, the
os-ken OpenFlow apps (native threads), the REST API and /metrics.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from controller import __version__
from controller.config import Config, ConfigError, check_ports_free, load
from controller.core.hub import Hub
from controller.core.metrics import Metrics
from controller.ovsdb import OvsdbClient, OvsdbSwitches
from controller.registry import feature_factories
from controller.store import Store, open_store

LOG = logging.getLogger("hubshift")
APPS = ["apps.hub_app"]


def seed_subnets(store: Store, config: Config) -> None:
    """Subnets named in the configuration exist in the store (created or updated)."""
    for subnet in config.subnets:
        store.put("subnet", subnet.id, {"cidr": str(subnet.cidr), "gateway": str(subnet.gateway)})


def _start_openflow(config: Config, hub: Hub) -> list:
    os.environ.setdefault("OSKEN_HUB_TYPE", "native")
    from os_ken import cfg
    from os_ken.base.app_manager import AppManager
    from os_ken.controller import controller as _registers_openflow_options  # noqa: F401

    # Echo every second: it is the liveness check of each switch (5 unanswered
    # close the connection), and with native threads it is also what lets
    # os-ken notice a closed connection (its send thread waits for a message).
    cfg.CONF(args=["--ofp-tcp-listen-port", str(config.of_port)], project="os_ken")
    cfg.CONF.set_override("echo_request_interval", 1.0)
    cfg.CONF.set_override("maximum_unreplied_echo_requests", 5)
    manager = AppManager.get_instance()
    manager.load_apps(APPS)
    contexts = manager.create_contexts()
    contexts["hub"] = hub
    return manager.instantiate_apps(**contexts)


def run(config: Config) -> int:
    from controller.api.app import create_app
    from controller.api.context import ApiContext
    from controller.api.server import ApiServer

    store = open_store(config.db)
    seed_subnets(store, config)
    metrics = Metrics()
    hub = Hub(store, metrics, features=feature_factories(config.features),
              settle=config.settle_seconds, ovsdb=OvsdbSwitches(OvsdbClient(config.ovsdb)))
    api = ApiServer(create_app(ApiContext(store, hub, metrics.registry, __version__,
                                          settings=config.features)),
                    config.api_host, config.api_port)
    api.start()
    hub.start()
    threads = _start_openflow(config, hub)
    store.append_event("controller", "hub-controller", "started",
                       {"version": __version__, "of_port": config.of_port, "api": config.api,
                        "pid": os.getpid()})
    LOG.info("hub-controller %s: OpenFlow on :%d, API on http://%s", __version__,
             config.of_port, config.api)

    stopping = threading.Event()

    def on_signal(signum, _frame):
        stopping.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping.wait(0.5):
        if not any(t.is_alive() for t in threads):
            LOG.error("the OpenFlow apps stopped")
            break
    LOG.info("hub-controller stopping")
    api.stop()
    hub.stop()
    store.append_event("controller", "hub-controller", "stopped", {"pid": os.getpid()})
    store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        config = load(argv)
        check_ports_free(config)
    except ConfigError as exc:
        print(f"hub-controller: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = run(config)
    except OSError as exc:
        print(f"hub-controller: {exc}", file=sys.stderr)
        code = 2
    # os-ken's per-connection threads are not daemons and have no stop hook:
    # everything of ours is closed and flushed, so leave without waiting on them.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
