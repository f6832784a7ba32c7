"""What the shadow labs share: slots running the real `hub-shadow-agent`, captures on a
host's interface read as whole connections, and the guards' drop counters.

A capture counts what reached a shadow by itself, never by the agent's report:
tcpdump on the shadow host's interface, one line per packet, read back as the
TCP flags each client connection (its client port) showed toward the service.
"""
from __future__ import annotations

import re

from controller.features.shadow.mirror import GUARD_DROP
from tests.lab.conftest import api
from tests.lab.harness import ROOT, sh, wait_for

NETCHECK = f"python3 {ROOT}/tests/lab/netcheck.py"
AGENT = ROOT / ".venv" / "bin" / "hub-shadow-agent"


def interface_ids(lab, hosts) -> dict[str, str]:
    """{host name: its interface id}, from the hub's discovered interfaces."""
    interfaces = api(lab, "GET", "/v1/interfaces", expect=200)
    return {h: next(i["id"] for i in interfaces if lab.host(h).IP() in i["ips"]) for h in hosts}


def add_slot(lab, host, slot_id: str, interface_id: str) -> str:
    """Set `host`'s interface aside as slot `slot_id` and start its agent; the agent's PID."""
    slot = api(lab, "POST", "/v1/shadow-slots", {"interface_id": interface_id, "id": slot_id},
               expect=201)
    server, port = slot["channel"]["server"], slot["channel"]["port"]
    lab.bg(host, f"bash -c 'exec {AGENT} --server {server} --port {port} --slot {slot_id} "
                 f"--key {slot['key']} --interface {host.intf()} "
                 f"2>>/tmp/{lab.prefix}-agent-{slot_id}.log'")
    return lab.background[-1][1]


def flags_by_port(capture: str, client_ip: str, port: int = 80) -> dict[str, set[str]]:
    """{client port: the TCP flags tcpdump showed from it to `port`} of a capture's text."""
    seen: dict[str, set[str]] = {}
    for line in capture.splitlines():
        m = re.search(rf"{re.escape(client_ip)}\.(\d+) > \S+\.{port}: Flags \[([^\]]+)\]", line)
        if m:
            seen.setdefault(m.group(1), set()).add(m.group(2))
    return seen


def whole(flags: set[str]) -> bool:
    """Seen from its SYN to its FIN."""
    return "S" in flags and any("F" in f for f in flags)


class Capture:
    """tcpdump of TCP to or from port 80 on a host's interface, read while it runs."""

    def __init__(self, lab, host, name: str) -> None:
        self.lab, self.host = lab, host
        self.out, err = f"/tmp/{lab.prefix}-{name}.txt", f"/tmp/{lab.prefix}-{name}.err"
        host.cmd(f"rm -f {self.out} {err}")
        lab.bg(host, f"bash -c 'exec tcpdump -i {host.intf()} -nn -l -U tcp port 80 "
                     f"> {self.out} 2> {err}'")
        self.pid = lab.background[-1][1]
        wait_for(f"tcpdump listening on {host.name}",
                 lambda: "listening on" in host.cmd(f"cat {err}"), 15)

    def text(self) -> str:
        return self.host.cmd(f"cat {self.out}")

    def connections(self, client_ip: str) -> dict[str, set[str]]:
        return flags_by_port(self.text(), client_ip)

    def packets(self, client_ip: str, client_port: str) -> int:
        """Packets seen from one client connection toward the service."""
        return len(re.findall(rf"{re.escape(client_ip)}\.{client_port} > \S+\.80: ",
                              self.text()))

    def stop(self) -> None:
        self.host.cmd(f"kill {self.pid}")
        self.lab.background.remove((self.host, self.pid))


def guard_drops(lab) -> int:
    """Packets the shadows sent that their ports' guards dropped (their answers, among them)."""
    out = sh("ovs-ofctl", "-O", "OpenFlow14", "dump-flows", lab.switch("c1").name, "table=0")
    return sum(int(n) for line in out.splitlines() if re.search(rf"priority={GUARD_DROP}\b", line)
               for n in re.findall(r"n_packets=(\d+)", line))
