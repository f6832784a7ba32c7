"""Remediation on a hub over fake switches: a finding from a running instance's agent
blocks its source toward the production interface (a record, an audit entry, a drop on
the production switch under the finding's cookie), or only alerts; the block ends with its
TTL, with a lift over REST, and survives a restart."""
from __future__ import annotations

from controller.agents.shadow import protocol as p
from controller.features.shadow.document import FINDING, KIND, REMEDIATION
from controller.features.shadow.mirror import BLOCK
from controller.features.shadow.mirror_net import ETH_IPV4
from controller.features.shadow.remediation import block_cookie
from controller.pipeline import tables
from controller.pipeline.flowspec import flow
from tests.unit.hubtest import H1_IP, H1_MAC, run
from tests.unit.test_shadow_manager import WEB, agents, fab, launched  # noqa: F401 (fixture)

EVIL, GOOD = "10.0.1.20", "10.0.1.21"
TTL = 60


def start(fab, **remediation):
    """web, remediation as given, one instance ready on slot-1; its agent."""
    one, two = agents(fab)
    one.hello()
    two.hello()
    fab.store.put(KIND, "web", {**WEB, "remediation": remediation})
    fab.hub.documents_changed(KIND)
    run(fab.hub)
    iid, _ = launched(one)
    one.send(p.Ready(iid, ("IDS_Signature_Scan",), ()))
    return one, iid


def find(agent, iid: str, seq: int, severity: str = "high", src: str | None = EVIL) -> str:
    """The agent reports one finding; its id."""
    five = None if src is None else p.FiveTuple("tcp", src, 40000, H1_IP, 80)
    agent.send(p.Findings(iid, seq, (p.Finding("IDS_Signature_Scan", severity, five,
                                               "signature evil", 5.0),)))
    return f"{agent.sid}-{seq}-0"


def drop(source: str, fid: str):
    """The block's drop as the mirror compiler makes it (l2, above the hooks)."""
    return flow(tables.L2.id, BLOCK, {"eth_dst": H1_MAC, "eth_type": ETH_IPV4,
                                      "ipv4_src": source}, cookie=block_cookie(fid))


def drops(fab) -> list:
    return [f for f in fab.a.flows.values() if f.table == tables.L2.id and f.priority == BLOCK]


def audit(fab) -> list[str]:
    return [m for _, _, m in fab.events(REMEDIATION)]


def sample(fab, name: str, **labels) -> float | None:
    return fab.hub.metrics.registry.get_sample_value(name, labels)


def test_a_finding_at_min_severity_blocks_its_source(fab):
    one, iid = start(fab, mode="block", ttl=TTL, min_severity="high")
    fid = find(one, iid, 1, "high")
    block = fab.store.get(REMEDIATION, fid).body
    assert {k: block[k] for k in ("appliance_id", "finding_id", "source", "severity", "ttl")} == {
        "appliance_id": "web", "finding_id": fid, "source": EVIL, "severity": "high", "ttl": TTL}
    assert block["expires_at"] == block["created_at"] + TTL == fab.wall() + TTL
    assert "IDS_Signature_Scan" in block["reason"]
    finding = fab.store.get(FINDING, fid).body
    assert (finding["action"], finding["remediation_id"]) == ("block", fid)
    assert audit(fab) == [f"blocked {EVIL} toward web for {TTL} s: finding {fid} "
                          f"({block['reason']})"]
    assert drops(fab) == [drop(EVIL, fid)]
    assert fab.a.flows[drop(EVIL, fid).key] == drop(EVIL, fid)
    assert sample(fab, "hub_shadow_blocks", appliance="web") == 1
    assert sample(fab, "hub_shadow_remediations_total", appliance="web", action="block") == 1


def test_one_block_per_source_a_later_finding_extends_nothing(fab):
    one, iid = start(fab, mode="block", ttl=TTL, min_severity="medium")
    first = find(one, iid, 1, "high")
    expires = fab.store.get(REMEDIATION, first).body["expires_at"]
    fab.wall.advance(10)
    second = find(one, iid, 2, "critical")
    assert [d.id for d in fab.store.list(REMEDIATION)] == [first]
    assert fab.store.get(REMEDIATION, first).body["expires_at"] == expires
    assert fab.store.get(FINDING, second).body["remediation_id"] == first
    assert drops(fab) == [drop(EVIL, first)]
    third = find(one, iid, 3, "medium", src=GOOD)       # another source: a block of its own
    assert sorted(f.match for f in drops(fab)) == sorted(
        (drop(EVIL, first).match, drop(GOOD, third).match))
    assert sample(fab, "hub_shadow_blocks", appliance="web") == 2
    assert sample(fab, "hub_shadow_remediations_total", appliance="web",
                  action="already_blocked") == 1


def test_below_min_severity_or_mode_alert_or_no_source_only_alerts(fab):
    one, iid = start(fab, mode="block", ttl=TTL, min_severity="high")
    low = find(one, iid, 1, "medium")
    nowhere = find(one, iid, 2, "critical", src=None)
    fab.store.put(KIND, "web", {**WEB, "remediation": {"mode": "alert", "min_severity": "low"}})
    fab.hub.documents_changed(KIND)
    run(fab.hub)
    alerted = find(one, iid, 3, "critical")
    for fid in (low, nowhere, alerted):
        finding = fab.store.get(FINDING, fid).body
        assert (finding["action"], finding["remediation_id"]) == ("alert", None)
    assert fab.store.list(REMEDIATION) == [] and audit(fab) == [] and drops(fab) == []
    assert sample(fab, "hub_shadow_remediations_total", appliance="web", action="alert") == 3


def test_the_block_ends_with_its_ttl(fab):
    one, iid = start(fab, mode="block", ttl=TTL, min_severity="high")
    fid = find(one, iid, 1)
    assert fab.feature("shadow").next_wakeup() <= TTL
    fab.wall.advance(TTL - 1)
    run(fab.hub)
    assert drops(fab) == [drop(EVIL, fid)]
    fab.wall.advance(1)
    run(fab.hub)
    assert fab.store.find(REMEDIATION, fid) is None and drops(fab) == []
    assert audit(fab)[-1] == f"block of {EVIL} lifted: TTL over"
    assert sample(fab, "hub_shadow_blocks", appliance="web") == 0
    assert sample(fab, "hub_shadow_remediations_total", appliance="web", action="expired") == 1


def test_a_lift_over_rest_removes_the_drop(fab):
    one, iid = start(fab, mode="block", ttl=TTL, min_severity="high")
    fid = find(one, iid, 1)
    assert drops(fab)
    fab.store.delete(REMEDIATION, fid)                  # what DELETE /v1/remediations/{id} does
    fab.hub.documents_changed(REMEDIATION)
    run(fab.hub)
    assert drops(fab) == []
    assert sample(fab, "hub_shadow_remediations_total", appliance="web", action="lifted") == 1
    again = find(one, iid, 2)                           # the source may be blocked again
    assert drops(fab) == [drop(EVIL, again)]


def test_deleting_the_appliance_lifts_its_blocks(fab):
    one, iid = start(fab, mode="block", ttl=TTL, min_severity="high")
    fid = find(one, iid, 1)
    fab.store.delete(KIND, "web")
    fab.hub.documents_changed(KIND)
    run(fab.hub)
    assert fab.store.find(REMEDIATION, fid) is None and drops(fab) == []
    assert audit(fab)[-1] == f"block of {EVIL} lifted: appliance deleted"


def test_a_restarted_hub_keeps_the_blocks_and_ends_them_on_time(fab):
    one, iid = start(fab, mode="block", ttl=TTL, min_severity="high")
    fid = find(one, iid, 1)
    fab.hub = fab.make_hub()
    fab.a.flows.clear()                                 # nothing kept on the switch either
    fab.connect()
    fab.settle()
    assert drops(fab) == [drop(EVIL, fid)]
    assert sample(fab, "hub_shadow_blocks", appliance="web") == 1
    fab.wall.advance(TTL)
    run(fab.hub)
    assert drops(fab) == [] and fab.store.find(REMEDIATION, fid) is None


def test_every_finding_is_an_alert_and_goes_with_its_appliance(fab):
    one, iid = start(fab, mode="alert")
    fid = find(one, iid, 1, severity="medium")
    find(one, iid, 2, severity="critical")
    alerts = {d.id: d.body for d in fab.store.list("alert")}
    assert set(alerts) == {f"finding:{fid}", f"finding:{one.sid}-2-0"}
    first = alerts[f"finding:{fid}"]
    assert (first["kind"], first["severity"], first["finding_severity"], first["appliance_id"],
            first["finding_id"], first["persona_id"], first["cleared_at"]) == \
        ("shadow_finding", "warning", "medium", "web", fid, None, None)
    assert alerts[f"finding:{one.sid}-2-0"]["severity"] == "critical"
    assert "signature evil" in first["message"]
    assert sample(fab, "hub_alerts_total", kind="shadow_finding", severity="warning") == 1
    assert [m for _, _, m in fab.events("alert")][0].startswith("warning shadow_finding")
    fab.store.delete(KIND, "web")
    fab.hub.documents_changed(KIND)
    run(fab.hub)
    assert fab.store.list("alert") == [] and fab.store.list(FINDING) == []
    assert any("cleared" in m for _, _, m in fab.events("alert"))


def test_an_appliance_keeps_its_latest_findings(fab, monkeypatch):
    from controller.features.shadow import findings
    monkeypatch.setattr(findings, "KEPT", 3)
    one, iid = start(fab, mode="alert")
    ids = [find(one, iid, seq) for seq in range(1, 6)]
    kept = {d.id for d in fab.store.list(FINDING)}
    assert kept == set(ids[-3:])
    assert {d.id for d in fab.store.list("alert")} == {f"finding:{i}" for i in ids[-3:]}
