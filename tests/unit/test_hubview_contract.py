"""The API's fake hub answers in the shapes the real hub answers.

The REST and hubctl tests run against `tests.unit.fakes.FakeHub`.  Here the
same HubView calls go to the real, running hub (its worker thread, the real
features, fake switches) and to the fake, and the shapes of the answers are
compared: keys, nesting, element and scalar types.  A fake that drifts from
the real thing (a string where the hub answers a list) fails here.
"""
from __future__ import annotations

import time
from typing import Any

import pytest

from controller.core import interfaces
from controller.core.hub import ROUTER_MAC, Hub
from controller.features.persona import store as persona_store
from controller.features.persona.settings import PersonaSettings
from controller.packets import lldp_frame
from controller.pipeline import tables
from controller.registry import feature_factories
from controller.store import open_store
from tests.unit.fakes import FakeHub, dry_run_answer, persona_preview_answer, usage_answer
from tests.unit.hubtest import (A, B, H1_IP, H1_MAC, SUBNETS, FakeSwitch, arp_frame, ports_a,
                                ports_b)

IID = interfaces.interface_id(A, 2)
OPEN = {"name": "open", "ip_addresses": [H1_IP], "default_action": "allow"}


def shape(value: Any) -> Any:
    """What a client relies on: keys, nesting, element shape and scalar types.

    None matches anything (optional fields); an empty list matches any list.
    """
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def same_shape(fake: Any, real: Any, where: str = "") -> list[str]:
    if fake == "NoneType" or real == "NoneType":
        return []
    if isinstance(fake, dict) and isinstance(real, dict):
        if isinstance(next(iter(fake), None), str) and all(len(k) == 16 for k in [*fake, *real]):
            fake, real = list(fake.values())[:1], list(real.values())[:1]   # keyed by datapath
            return same_shape(fake, real, where + "{dpid}")
        out = [f"{where}: keys {sorted(set(fake) ^ set(real))}"] if set(fake) != set(real) else []
        return out + [e for k in set(fake) & set(real)
                      for e in same_shape(fake[k], real[k], f"{where}.{k}")]
    if isinstance(fake, list) and isinstance(real, list):
        return [] if not fake or not real else same_shape(fake[0], real[0], where + "[]")
    return [] if fake == real else [f"{where}: fake {fake!r}, real {real!r}"]


def wait(check, what: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = check()
        if answer:
            return answer
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def real():
    store = open_store(":memory:")
    for id, body in SUBNETS.items():
        store.put("subnet", id, body)
    store.put("personality", "open", OPEN)
    hub = Hub(store, features=feature_factories({"persona": PersonaSettings(gateway=B)}),
              settle=0.0)
    hub.start()
    a, b = FakeSwitch(A, ports_a()), FakeSwitch(B, ports_b())
    hub.switch_connected(a)
    hub.switch_connected(b)
    wait(lambda: all(d["flows"]["in_sync"] for d in hub.datapaths()) and len(hub.datapaths()) == 2,
         "two switches in sync")
    hub.packet_in(B, tables.CLASSIFY.id, 2, lldp_frame(A, 1, ROUTER_MAC))
    hub.packet_in(A, tables.CLASSIFY.id, 2, arp_frame(1, H1_MAC, H1_IP, "10.0.1.1"))
    wait(lambda: hub.topology()["hosts"] and hub.topology()["links"], "a link and a host")
    yield hub
    hub.stop()


def test_reads_have_the_real_shapes(real):
    fake = FakeHub()
    assert same_shape(shape(fake.health()), shape(real.health())) == []
    assert same_shape(shape(fake.topology()), shape(real.topology())) == []
    assert shape(fake.datapaths()) == [] and shape(real.datapaths()) != []


def test_the_personality_dry_run_has_the_real_shape(real):
    answer = real.query("personality", "dry_run", interface_id=IID, personality_id="open")
    assert answer["flows"]["add"] and isinstance(answer["flows"]["add"][0], str)
    assert same_shape(shape(dry_run_answer(IID, "open")), shape(answer)) == []


def test_the_persona_preview_has_the_real_shape(real):
    body = {"name": "dev", "ip_range": "10.100.0.0/24", "protocols": ["tcp", "udp"],
            "qos": {"bandwidth": "100Mbps"}, "expiration": "2099-01-01T00:00:00Z"}
    plan = persona_store.plan(real.store, body, time.time(), (), persona_store.DEFAULT_NAT_POOL)
    record = {"id": plan.id, **plan.body}
    answer = real.query("persona", "preview", body=record)
    assert all(isinstance(flows, list) for flows in answer["flows"].values())
    flows = [f for per_switch in answer["flows"].values() for f in per_switch]
    assert len(flows) > 2 and all(isinstance(f, str) for f in flows)   # one flow an item
    assert same_shape(shape(persona_preview_answer(record)), shape(answer)) == []


def test_usage_has_the_real_shape(real):
    assert real.query("persona", "usage", id="nobody") is None
    body = {"name": "counted", "ip_range": "10.101.0.0/24", "protocols": ["tcp"],
            "expiration": "2099-01-01T00:00:00Z"}
    created = persona_store.create(real.store, body, time.time(), (),
                                   persona_store.DEFAULT_NAT_POOL)
    real.documents_changed("persona")
    answer = wait(lambda: real.query("persona", "usage", id=created.document.id),
                  "the first usage poll")
    assert same_shape(shape(usage_answer()), shape(answer)) == []


def test_both_refuse_what_does_not_exist(real):
    for hub in (FakeHub(), real):
        with pytest.raises(LookupError):
            hub.query("persona", "no-such-query")
        with pytest.raises(LookupError):
            hub.query("no-such-feature", "preview")
    with pytest.raises(LookupError):
        real.query("personality", "dry_run", interface_id=IID, personality_id="nope")
