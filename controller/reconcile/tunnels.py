"""The hub's VPN tunnel ports, kept equal to what the bound personalities need, over OVSDB.

Like meters (`controller.reconcile.meters`), tunnel ports live beside the
flows that use them: a port must exist (and its OpenFlow number be known)
before a flow can output to it, and it may only go once no installed flow
names it.  The hub therefore calls

- `sync` before compiling: every wanted port of a ready switch exists
  (created over OVSDB if missing); answers whether the known port numbers
  changed, so the hub recompiles;
- `prune` after reconciling: ports no binding wants any more are deleted,
  on switches whose flows are in sync (so no installed flow still uses them).

Realized state is read back from OVSDB the first time a switch is seen ready
(each time it connects): the Port rows on its bridge whose external_ids
carry `hubshift-datapath` = its datapath id.  A controller killed between
creating a port and binding its personality thus removes the port when it
comes back; one that was killed after binding finds the port and reuses it
(same name, same number), so a restart changes no flow.

Errors (OVSDB unreachable, a bridge not found) are logged and retried after
`RETRY_SECONDS`, never in a tight loop; until then a wanted port's number is
unknown and the VPN flows drop the remote prefixes (see `controller.features.personality.vpn`).
A switch no binding needs a tunnel on is read back once per connection only,
so a fabric the controller has no OVSDB access to costs one log line per
connect.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from controller.ovsdb import Bridge, OvsdbError, OvsdbSwitches, PortSpec
from controller.core.topology import dpid_str

LOG = logging.getLogger("hubshift.tunnels")
RETRY_SECONDS = 5.0

BridgeName = Callable[[int], "str | None"]   # dpid -> the bridge name OpenFlow reported, if any


EXT_DATAPATH = "hubshift-datapath"
EXT_INTERFACE = "hubshift-interface"
NAME_RE = re.compile(r"hs[vgn][0-9a-f]{8}\Z")   # the names the hub gives its tunnel ports


@dataclass(frozen=True)
class TunnelPort:
    """One OVS tunnel port the hub wants on a switch (what `ensure` makes exist)."""
    dpid: int
    name: str
    type: str
    remote_ip: str
    key: int | None
    interface_id: str

    @property
    def options(self) -> dict[str, str]:
        opts = {"remote_ip": self.remote_ip}
        if self.key is not None:
            opts["key"] = str(self.key)
        return opts

    @property
    def external_ids(self) -> dict[str, str]:
        return {EXT_DATAPATH: dpid_str(self.dpid), EXT_INTERFACE: self.interface_id}

    @property
    def endpoint(self) -> tuple[str, str, int]:
        """What the receiving Open vSwitch tells tunnels apart by (type, remote, key)."""
        return (self.type, self.remote_ip, self.key or 0)


def is_tunnel_port_name(name: str) -> bool:
    """A port the hub created for a VPN (never a host-facing port)."""
    return bool(NAME_RE.match(name))



class TunnelPorts:
    def __init__(self, switches: OvsdbSwitches | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.switches = switches
        self.clock = clock
        self._bridges: dict[int, Bridge] = {}
        self._realized: dict[int, dict[str, int | None]] = {}   # dpid -> port name -> ofport
        self._retry_at: dict[tuple[int, str], float] = {}       # (dpid, what) -> not before
        self._read_once: set[int] = set()       # switches read back (or tried) this connection
        self._reported: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        return self.switches is not None

    def ofports(self) -> dict[str, int]:
        """OpenFlow port number of every tunnel port known to exist, by name."""
        return {name: ofport for ports in self._realized.values()
                for name, ofport in ports.items() if ofport is not None}

    def realized(self, dpid: int) -> dict[str, int | None]:
        return dict(self._realized.get(dpid, {}))

    # ------------------------------------------------------------------ ensure
    def ensure(self, port: TunnelPort, bridge_name: str | None) -> int:
        """Make one port exist now; its OpenFlow port number.  OvsdbError if it cannot."""
        if self.switches is None:
            raise OvsdbError("no OVSDB endpoint is configured (setting `ovsdb`)")
        bridge = self._bridge(port.dpid, bridge_name)
        realized = self._realized.setdefault(port.dpid, {})
        spec = PortSpec(port.name, port.type, port.options, port.external_ids)
        try:
            ofport = self.switches.ensure_port(bridge, spec)
        except OvsdbError:
            # It may exist without a number (ovs-vswitchd refused it): remember
            # it, so prune removes it once nothing wants it.
            if self.switches.port(port.name) is not None:
                realized.setdefault(port.name, None)
            raise
        if realized.get(port.name) != ofport:
            LOG.info("tunnel port %s (%s to %s, key %s) on %s: OpenFlow port %d", port.name,
                     port.type, port.remote_ip, port.key, bridge.name, ofport)
        realized[port.name] = ofport
        return ofport

    def _bridge(self, dpid: int, name: str | None) -> Bridge:
        bridge = self._bridges.get(dpid)
        if bridge is None or (name is not None and bridge.name != name):
            assert self.switches is not None
            bridge = self._bridges[dpid] = self.switches.bridge(dpid, name)
        return bridge

    # -------------------------------------------------------------------- sync
    def sync(self, wanted: Mapping[int, Iterable[TunnelPort]], ready: Iterable[int],
             bridge_name: BridgeName) -> bool:
        """Wanted ports of ready switches exist; True if the known port numbers changed."""
        ready = set(ready)
        for dpid in list(self._realized):
            if dpid not in ready:            # disconnected or settling: read again when ready
                del self._realized[dpid]
                self._bridges.pop(dpid, None)
        self._read_once &= ready
        if self.switches is not None:
            for dpid in sorted(ready):
                ports = list(wanted.get(dpid, ()))
                if dpid not in self._realized:
                    # Without wanted ports, one try per connection (strays of a crash);
                    # a fabric without OVSDB access then logs once, not every few seconds.
                    if not ports and dpid in self._read_once:
                        continue
                    self._read_once.add(dpid)
                    if not self._read_back(dpid, bridge_name(dpid)):
                        continue
                for port in sorted(ports, key=lambda p: p.name):
                    if self._realized[dpid].get(port.name) is None:
                        self._attempt(dpid, f"ensure {port.name}",
                                      lambda p=port: self.ensure(p, bridge_name(dpid)))
        now = self.ofports()
        changed = now != self._reported
        self._reported = now
        return changed

    def _read_back(self, dpid: int, bridge_name: str | None) -> bool:
        def read() -> None:
            assert self.switches is not None
            bridge = self._bridge(dpid, bridge_name)
            names = self.switches.ports_with(bridge, EXT_DATAPATH, dpid_str(dpid))
            self._realized[dpid] = {name: None for name in names}
            if names:
                LOG.info("%s: found tunnel ports %s", bridge.name, ", ".join(names))
        return self._attempt(dpid, "read back", read)

    def _attempt(self, dpid: int, what: str, action: Callable[[], object]) -> bool:
        key = (dpid, what)
        if self.clock() < self._retry_at.get(key, 0.0):
            return False
        try:
            action()
        except OvsdbError as exc:
            LOG.warning("tunnel ports of %s: %s failed: %s (retried in %g s)", dpid_str(dpid),
                        what, exc, RETRY_SECONDS)
            self._retry_at[key] = self.clock() + RETRY_SECONDS
            return False
        self._retry_at.pop(key, None)
        return True

    # ------------------------------------------------------------------- prune
    def prune(self, wanted: Mapping[int, Iterable[TunnelPort]], in_sync: Iterable[int]) -> list[str]:
        """Delete realized ports no binding wants, on switches whose flows are in sync."""
        removed = []
        for dpid in sorted(set(in_sync) & set(self._realized)):
            keep = {p.name for p in wanted.get(dpid, ())}
            for name in sorted(set(self._realized[dpid]) - keep):
                bridge = self._bridges.get(dpid)
                if bridge is None or self.switches is None:
                    continue
                if self._attempt(dpid, f"delete {name}",
                                 lambda b=bridge, n=name: self.switches.delete_port(b, n)):
                    del self._realized[dpid][name]
                    removed.append(name)
                    LOG.info("tunnel port %s removed from %s", name, bridge.name)
        return removed
