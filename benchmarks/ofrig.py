"""The rig benchmarks/flow_rate.py runs on: an empty netdev bridge, and the hub's
os-ken app in this process, handing over a channel that times its own steps.
"""
from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

from benchmarks.labtools import sh

OUT_PORT = 1
pc = time.perf_counter


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Bridge:
    def __init__(self, name: str) -> None:
        self.name = name
        self.created = False

    def create(self) -> None:
        self.created = True
        sh("ovs-vsctl", "--timeout=20", "add-br", self.name,
           "--", "set", "bridge", self.name, "datapath_type=netdev", "fail_mode=secure",
           "protocols=OpenFlow13,OpenFlow14", "other-config:disable-in-band=true",
           "--", "add-port", self.name, f"{self.name}p{OUT_PORT}",
           "--", "set", "interface", f"{self.name}p{OUT_PORT}", "type=internal",
           f"ofport_request={OUT_PORT}")
        self.dpid = int(sh("ovs-vsctl", "get", "bridge", self.name,
                           "datapath_id").strip().strip('"'), 16)

    def destroy(self) -> None:
        if self.created:
            subprocess.run(["ovs-vsctl", "--timeout=20", "--if-exists", "del-br", self.name],
                           capture_output=True, timeout=120)
            self.created = False

    def ofctl(self, *args: str) -> str:
        return sh("ovs-ofctl", "-O", "OpenFlow14", *args)

    def flow_count(self) -> int:
        out = self.ofctl("dump-aggregate", self.name)
        m = re.search(r"flow_count=(\d+)", out)
        if not m:
            raise RuntimeError(f"unexpected dump-aggregate output: {out!r}")
        return int(m.group(1))

    def clear(self) -> None:
        self.ofctl("del-flows", self.name)
        if self.flow_count() != 0:
            raise RuntimeError(f"{self.name}: del-flows left flows behind")

    def expect(self, n: int, what: str) -> None:
        got = self.flow_count()
        if got != n:
            raise RuntimeError(f"{what}: bridge holds {got} flows, expected {n}")


def switch_cpu() -> float:
    """CPU seconds ovs-vswitchd has used so far (all its threads)."""
    pid = int(Path("/var/run/openvswitch/ovs-vswitchd.pid").read_text().strip())
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BenchHub:
    """Stands in for controller.core.hub.Hub: hands connected switches to the benchmark."""

    def __init__(self) -> None:
        self.connected: queue.Queue = queue.Queue()

    def switch_connected(self, channel) -> None:
        self.connected.put(channel)

    def switch_disconnected(self, dpid, channel) -> None:
        pass

    def port_status(self, dpid, port, deleted) -> None:
        pass

    def packet_in(self, dpid, table_id, in_port, data) -> None:
        pass


def _timed_channel_class():
    """OsKenChannel whose steps add up their own wall time (behaviour unchanged).

    The commit step (COMMIT + barrier) is timed as a whole: the writes and
    the wait inside it are not counted again.
    """
    from apps.channel import OsKenChannel

    class TimedChannel(OsKenChannel):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.timing: Counter = Counter()
            self._committing = False

        def _timed(self, key, fn, *args):
            if self._committing:
                return fn(*args)
            t = pc()
            try:
                return fn(*args)
            finally:
                self.timing[key] += pc() - t

        def apply(self, diff):
            return self._timed("apply", super().apply, diff)

        def _write(self, buf):
            self.timing["writes"] += not self._committing
            return self._timed("write", super()._write, buf)

        def _wait(self, waiter):
            return self._timed("wait", super()._wait, waiter)

        def _end_bundle(self, bundle, kind, xids):
            t = pc()
            self._committing = True
            try:
                return super()._end_bundle(bundle, kind, xids)
            finally:
                self._committing = False
                self.timing["commit"] += pc() - t

    return TimedChannel


def start_openflow(of_port: int):
    """The hub's os-ken app (apps.hub_app), in this process, as hub-controller starts it."""
    from os_ken import cfg
    from os_ken.base.app_manager import AppManager

    import apps.hub_app
    apps.hub_app.OsKenChannel = _timed_channel_class()  # instrumented, same behaviour

    cfg.CONF(args=["--ofp-tcp-listen-port", str(of_port), "--ofp-listen-host", "127.0.0.1"],
             project="os_ken")
    hub = BenchHub()
    manager = AppManager.get_instance()
    manager.load_apps(["apps.hub_app"])
    contexts = manager.create_contexts()
    contexts["hub"] = hub
    manager.instantiate_apps(**contexts)
    return hub
