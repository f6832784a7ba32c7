"""From stored manifests, slots and instances to the mirror's input, on a hub over fake
switches: only a ready instance receives copies, indexes are kept, personalities kept."""
from __future__ import annotations

from controller.core import budgets
from controller.core.interfaces import interface_id
from controller.features.shadow.mirror import compile_mirror
from controller.features.shadow.mirroring import Indexes, mirror_input
from controller.features.shadow.document import Slot, parse_manifest
from controller.pipeline import tables
from controller.pipeline.actions import Clone
from tests.unit.hubtest import A, B, H2_IP, H2_MAC, SUBNETS, Fabric

MANIFEST = {"name": "web", "interfaces": [interface_id(A, 2)],
            "service": [{"protocol": "tcp", "port": 80}], "appliance_image": "sleep 60",
            "shadowing": {"shadow_instance_count": 1, "shadow_traffic_percentage": 12.5,
                          "shadow_analysis_profiles": ["IDS_Signature_Scan"]},
            "mirror": {"snaplen": 128}}


def lab() -> Fabric:
    fab = Fabric()
    for id, body in SUBNETS.items():
        fab.store.put("subnet", id, body)
    fab.load_subnets()
    fab.connect()
    fab.settle()
    fab.lldp()
    fab.learn()                                             # production: H1 on A port 2
    fab.learn(dpid=B, port=3, mac=H2_MAC, ip=H2_IP)         # the slot's host on B port 3
    return fab


def state(ready: bool) -> dict:
    return {"instances": [{"id": "web-1", "slot_id": "s1", "appliance_id": "web", "ordinal": 0,
                           "state": "ready" if ready else "launching"}],
            "percentage": {"current": 12.5, "reason": "as configured"}}


def test_a_ready_instance_gets_copies_and_its_port_is_guarded():
    fab = lab()
    slots = {"s1": Slot("s1", interface_id(B, 3), "k")}
    appliances = {"web": parse_manifest(MANIFEST)}
    indexes = Indexes(fab.store)
    indexes.sync({"web"})
    fab.store.put("shadow-state", "web", state(ready=False))
    inp = mirror_input(fab.store, fab.hub.view(), appliances, indexes.of, slots)
    (net,) = inp.appliances
    assert net.permille == 125 and net.snaplen == 128 and not net.receivers
    flows = compile_mirror(inp)
    assert not any(isinstance(a, Clone) for f in flows.get(A, ()) for a in f.actions)
    assert any(f.table == tables.CLASSIFY.id and f.priority >= 65100 for f in flows[B])
    fab.store.put("shadow-state", "web", state(ready=True))
    flows = compile_mirror(mirror_input(fab.store, fab.hub.view(), appliances, indexes.of, slots))
    assert any(isinstance(a, Clone) for f in flows[A] for a in f.actions)
    assert budgets.audit([f for fl in flows.values() for f in fl]) == []


def test_indexes_are_kept_and_freed():
    fab = lab()
    indexes = Indexes(fab.store)
    indexes.sync({"a", "b"})
    assert indexes.of == {"a": 0, "b": 1}
    indexes.sync({"b", "c"})
    assert indexes.of == {"b": 1, "c": 0}
    assert Indexes(fab.store).of == {"b": 1, "c": 0}      # stored


def test_a_disabled_appliance_or_one_without_state_mirrors_nothing():
    fab = lab()
    appliances = {"web": parse_manifest({**MANIFEST, "shadowing": {
        **MANIFEST["shadowing"], "shadow_enabled": False}})}
    fab.store.put("shadow-state", "web", state(ready=True))
    inp = mirror_input(fab.store, fab.hub.view(), appliances, {"web": 0}, {})
    assert inp.appliances == ()
    inp = mirror_input(fab.store, fab.hub.view(), {"web": parse_manifest(MANIFEST)}, {"web": 0},
                       {})
    assert inp.appliances[0].instances == ()               # its slot is unknown


def test_the_feature_guards_every_slot_and_mirrors_to_ready_instances():
    fab = lab()
    fab.store.put("shadow-slot", "s1", {"interface_id": interface_id(B, 3), "key": "k" * 48})
    fab.store.put("appliance", "web", MANIFEST)
    fab.hub.documents_changed("appliance")
    fab.settle()
    guard = [f for f in fab.b.flows.values() if f.table == tables.CLASSIFY.id
             and f.priority >= 65100]
    assert guard, "a free slot's port is guarded (its agent's HELLO is punted)"
    assert any(f.table == tables.SHADOW_AGENT.id for f in fab.b.flows.values())
    feature = fab.feature("shadow")
    assert not any(isinstance(a, Clone) for f in feature.contribute(fab.hub.view()).flows.get(A, ())
                   for a in f.actions)
    fab.store.put("shadow-state", "web", state(ready=True))
    contribution = feature.contribute(fab.hub.view())
    assert any(isinstance(a, Clone) for f in contribution.flows[A] for a in f.actions)
    assert B in contribution.meters
