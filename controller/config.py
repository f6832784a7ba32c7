"""hub-controller configuration: defaults < YAML file (--config) < command-line flags.

Everything is validated before anything starts, so a bad configuration exits
with one clear message and nothing half-started.
"""
from __future__ import annotations

import argparse
import errno
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any, Mapping
from pathlib import Path

import yaml

from controller.ovsdb import DEFAULT_ENDPOINT, Endpoint
from controller.core.topology import Subnet
from controller.registry import FEATURES

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Config:
    of_port: int = 6653
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    db: str = "var/hub.db"
    log_level: str = "info"
    settle_seconds: float = 1.0
    subnets: tuple[Subnet, ...] = field(default_factory=tuple)
    ovsdb: str = DEFAULT_ENDPOINT      # where switch ports (VPN tunnels) are configured
    # Feature name -> its validated settings (absent sections: the feature's defaults).
    features: Mapping[str, Any] = field(default_factory=lambda: _feature_settings({}))

    @property
    def api(self) -> str:
        return f"{self.api_host}:{self.api_port}"


CORE_KEYS = {"of_port", "api", "db", "log_level", "settle_seconds", "subnets", "ovsdb"}


def file_keys() -> set[str]:
    """Every key a configuration file may hold: the core's and each feature's section."""
    return CORE_KEYS | {p.settings_key for p in FEATURES if p.settings_key}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hub-controller",
        description="Run the hubshift controller: the os-ken OpenFlow apps, the embedded "
                    "store, the REST API and Prometheus metrics in one process.")
    p.add_argument("--config", metavar="FILE",
                   help="YAML file with any of: of_port, api, db, log_level, settle_seconds, "
                        "subnets (list of {id, cidr, gateway}), personas ({gateway: DPID, "
                        "nat_pool: CIDR, poll_seconds: N}), ovsdb. Flags override it.")
    p.add_argument("--of-port", type=int, metavar="PORT",
                   help="OpenFlow listening port (default 6653)")
    p.add_argument("--api", metavar="HOST:PORT",
                   help="REST API and /metrics address (default 127.0.0.1:8080)")
    p.add_argument("--db", metavar="PATH", help="SQLite store path (default var/hub.db)")
    p.add_argument("--log-level", choices=LOG_LEVELS, help="logging level (default info)")
    p.add_argument("--ovsdb", metavar="ENDPOINT",
                   help="OVSDB of the switches, for the ports OpenFlow cannot create (VPN "
                        f"tunnels): unix:PATH or tcp:HOST:PORT (default {DEFAULT_ENDPOINT})")
    return p


def _port(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{name}: must be a port number 1-65535, got {value!r}")
    return value


def _api(value) -> tuple[str, int]:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"api: must be HOST:PORT, got {value!r}")
    host, _, port = value.rpartition(":")
    try:
        ipaddress.ip_address(host) if host not in ("localhost",) else None
    except ValueError:
        raise ConfigError(f"api: {host!r} is not an IP address") from None
    if not port.isdigit():
        raise ConfigError(f"api: port {port!r} is not a number")
    return host, _port(int(port), "api")


def _subnets(value) -> tuple[Subnet, ...]:
    if not isinstance(value, list):
        raise ConfigError("subnets: must be a list of {id, cidr, gateway}")
    out, seen = [], set()
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"id", "cidr", "gateway"}:
            raise ConfigError(f"subnets[{i}]: needs exactly id, cidr and gateway")
        if item["id"] in seen:
            raise ConfigError(f"subnets[{i}].id: duplicate id {item['id']!r}")
        seen.add(item["id"])
        try:
            out.append(Subnet.from_body(str(item["id"]), item))
        except ValueError as exc:
            raise ConfigError(f"subnets[{i}]: {exc}") from None
    return tuple(out)


def load(argv: list[str] | None = None) -> Config:
    args = parser().parse_args(argv)
    values = _read_file(args.config) if args.config else {}
    for key in ("of_port", "api", "db", "log_level", "ovsdb"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    config = Config(**_core_settings(values), features=_feature_settings(values))
    if config.api_port == config.of_port:
        raise ConfigError(f"api and of_port both use port {config.of_port}")
    return config


def _read_file(path: str) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config: {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of settings")
    known = file_keys()
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"--config: unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    return dict(data)


def _core_settings(values: dict) -> dict:
    cfg: dict = {}
    if "of_port" in values:
        cfg["of_port"] = _port(values["of_port"], "of_port")
    if "api" in values:
        cfg["api_host"], cfg["api_port"] = _api(values["api"])
    if "db" in values:
        if not isinstance(values["db"], str) or not values["db"]:
            raise ConfigError("db: must be a file path")
        cfg["db"] = values["db"]
    if "log_level" in values:
        if values["log_level"] not in LOG_LEVELS:
            raise ConfigError(f"log_level: must be one of {', '.join(LOG_LEVELS)}")
        cfg["log_level"] = values["log_level"]
    if "settle_seconds" in values:
        s = values["settle_seconds"]
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= 60:
            raise ConfigError("settle_seconds: must be a number of seconds 0-60")
        cfg["settle_seconds"] = float(s)
    if "subnets" in values:
        cfg["subnets"] = _subnets(values["subnets"])
    if "ovsdb" in values:
        try:
            cfg["ovsdb"] = str(Endpoint.parse(values["ovsdb"]))
        except ValueError as exc:
            raise ConfigError(f"ovsdb: {exc}") from None
    return cfg


def _feature_settings(values: dict) -> dict[str, Any]:
    """Each feature's section, validated by the feature (absent: its defaults)."""
    out = {}
    for plugin in FEATURES:
        if plugin.settings:
            try:
                out[plugin.name] = plugin.parse_settings(values.get(plugin.settings_key))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
    return out


def check_ports_free(config: Config) -> None:
    """Fail early, with a clear message, if a listening port is taken."""
    for what, host, port in (("of_port", "0.0.0.0", config.of_port),
                             ("api", config.api_host, config.api_port)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            reason = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ConfigError(f"{what}: cannot listen on {host}:{port}: {reason}") from None
        finally:
            sock.close()
