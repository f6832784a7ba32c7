"""Lab tier fixtures: root, Open vSwitch, the real controller, a Mininet hub."""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.lab.harness import ROOT, Controller

pytestmark = pytest.mark.lab


@pytest.fixture(scope="session", autouse=True)
def ovs_running():
    if os.geteuid() != 0:
        pytest.fail("the lab tier needs root (Mininet and Open vSwitch); run scripts/test as root")
    subprocess.run([str(ROOT / "scripts" / "ovs"), "start"], check=True, capture_output=True)


class Lab:
    """A started Mininet hub under a running hub-controller."""

    def __init__(self, net, controller: Controller, prefix: str, segments: int, hosts: int,
                 cores: int):
        self.net = net
        self.controller = controller
        self.prefix = prefix
        self.segments, self.hosts, self.cores = segments, hosts, cores
        self.background: list[tuple[object, str]] = []   # (host, pid) stopped by stop_lab

    def bg(self, host, cmd: str) -> None:
        """Run `cmd` in the background on a Mininet host until the lab stops."""
        host.cmd(f"{cmd} >/dev/null 2>&1 &")
        self.background.append((host, host.cmd("echo $!").strip()))

    def host(self, name: str):
        return self.net.get(self.prefix + name)

    def switch(self, name: str):
        return self.net.get(self.prefix + name)

    @property
    def dpids(self) -> list[str]:
        return [s.dpid for s in self.net.switches]


def start_lab(tmp_path_factory, prefix: str, segments: int = 2, hosts: int = 2, cores: int = 1,
              spares: int = 1):
    from topologies.hub import build_net, lab_subnets

    subprocess.run([str(ROOT / "scripts" / "clean"), prefix], check=True, capture_output=True)
    controller = Controller(tmp_path_factory.mktemp(f"lab-{prefix}"),
                            lab_subnets(segments, spares=spares))
    controller.start()
    net = build_net(segments=segments, hosts=hosts, cores=cores, spares=spares, prefix=prefix,
                    controller_port=controller.of_port)
    net.start()
    lab = Lab(net, controller, prefix, segments, hosts, cores)
    controller.wait_in_sync(lab.dpids)
    return lab


def api(lab: Lab, method: str, path: str, body: object = None, expect: int | None = None):
    """A REST call to the lab's controller; with `expect`, the status must be that."""
    status, data = lab.controller.request(method, path, body)
    if expect is not None:
        assert status == expect, (status, data)
    return data


def stop_lab(lab: Lab) -> None:
    for host, pid in lab.background:
        host.cmd(f"kill {pid}")
    try:
        lab.net.stop()
    finally:
        lab.controller.stop()
        subprocess.run([str(ROOT / "scripts" / "clean"), lab.prefix], capture_output=True)


@pytest.fixture(scope="module")
def hub_lab(tmp_path_factory, request):
    prefix = getattr(request.module, "LAB_PREFIX", "lt")
    lab = start_lab(tmp_path_factory, prefix)
    try:
        yield lab
    finally:
        stop_lab(lab)
