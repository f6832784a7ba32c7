"""The `ovsdb` setting: where the hub configures the ports OpenFlow cannot create."""
from __future__ import annotations

import pytest

from controller.config import ConfigError, load


def test_the_ovsdb_setting(tmp_path):
    assert load([]).ovsdb == "unix:/var/run/openvswitch/db.sock"
    assert load(["--ovsdb", "tcp:192.0.2.7:6640"]).ovsdb == "tcp:192.0.2.7:6640"
    path = tmp_path / "hub.yaml"
    path.write_text("ovsdb: unix:/run/ovs/db.sock\n")
    assert load(["--config", str(path)]).ovsdb == "unix:/run/ovs/db.sock"
    assert load(["--config", str(path), "--ovsdb", "tcp:[::1]:6640"]).ovsdb == "tcp:[::1]:6640"
    for bad in ("db.sock", "tcp:host", "ssl:h:6640"):
        with pytest.raises(ConfigError, match="ovsdb"):
            load(["--ovsdb", bad])
