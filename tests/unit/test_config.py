"""hub-controller configuration: defaults < YAML file < flags, validated up front."""
from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from controller import manager
from controller.config import Config, ConfigError, check_ports_free, load
from controller.core.topology import Subnet


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hub.yaml"
    path.write_text(text)
    return str(path)


def test_defaults():
    cfg = load([])
    assert cfg == Config()
    assert (cfg.of_port, cfg.api_host, cfg.api_port, cfg.db, cfg.log_level, cfg.settle_seconds,
            cfg.subnets) == (6653, "127.0.0.1", 8080, "var/hub.db", "info", 1.0, ())
    assert cfg.api == "127.0.0.1:8080"


def test_file_values(tmp_path):
    path = write(tmp_path, """
of_port: 6633
api: 0.0.0.0:9090
db: /tmp/x.db
log_level: debug
settle_seconds: 2.5
subnets:
  - {id: blue, cidr: 10.0.1.0/24, gateway: 10.0.1.1}
  - {id: red, cidr: 10.0.2.0/24, gateway: 10.0.2.254}
""")
    cfg = load(["--config", path])
    assert (cfg.of_port, cfg.api_host, cfg.api_port, cfg.db, cfg.log_level, cfg.settle_seconds) == \
        (6633, "0.0.0.0", 9090, "/tmp/x.db", "debug", 2.5)
    assert cfg.subnets == (
        Subnet("blue", ipaddress.IPv4Network("10.0.1.0/24"), ipaddress.IPv4Address("10.0.1.1")),
        Subnet("red", ipaddress.IPv4Network("10.0.2.0/24"), ipaddress.IPv4Address("10.0.2.254")))


def test_empty_file_is_defaults(tmp_path):
    assert load(["--config", write(tmp_path, "")]) == Config()


def test_integer_settle_becomes_float(tmp_path):
    cfg = load(["--config", write(tmp_path, "settle_seconds: 0\n")])
    assert cfg.settle_seconds == 0.0 and isinstance(cfg.settle_seconds, float)


def test_flags_override_file(tmp_path):
    path = write(tmp_path, "of_port: 6633\napi: 127.0.0.1:9090\ndb: a.db\nlog_level: debug\n"
                           "settle_seconds: 3\n")
    cfg = load(["--config", path, "--of-port", "7000", "--api", "localhost:7001",
                "--db", "b.db", "--log-level", "error"])
    assert (cfg.of_port, cfg.api_host, cfg.api_port, cfg.db, cfg.log_level) == \
        (7000, "localhost", 7001, "b.db", "error")
    assert cfg.settle_seconds == 3.0  # not a flag: the file's value stays


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load(["--config", write(tmp_path, "of_port: 6653\nsettle: 2\nzzz: 1\n")])
    msg = str(exc.value)
    assert "settle, zzz" in msg
    assert "known:" in msg and "settle_seconds" in msg


def test_unreadable_file(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"cannot read .*nope\.yaml: No such file"):
        load(["--config", missing])
    with pytest.raises(ConfigError, match="cannot read"):
        load(["--config", str(tmp_path)])  # a directory


def test_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load(["--config", write(tmp_path, "of_port: [6653\n")])


def test_file_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load(["--config", write(tmp_path, "- of_port\n")])


@pytest.mark.parametrize("value", ["0", "65536", "-1", "true", "'6653'", "66.5"])
def test_bad_of_port_in_file(tmp_path, value):
    with pytest.raises(ConfigError, match="of_port: must be a port number 1-65535"):
        load(["--config", write(tmp_path, f"of_port: {value}\n")])


def test_bad_of_port_flag():
    with pytest.raises(ConfigError, match="of_port"):
        load(["--of-port", "70000"])


@pytest.mark.parametrize("value,message", [
    ("8080", "must be HOST:PORT"),
    ("nohost", "must be HOST:PORT"),
    ("example.com:80", "is not an IP address"),
    ("127.0.0.1:http", "is not a number"),
    ("127.0.0.1:", "is not a number"),
    ("127.0.0.1:0", "api: must be a port number"),
    ("127.0.0.1:99999", "api: must be a port number"),
])
def test_bad_api(value, message):
    with pytest.raises(ConfigError, match=message):
        load(["--api", value])


def test_bad_api_type_in_file(tmp_path):
    with pytest.raises(ConfigError, match="must be HOST:PORT"):
        load(["--config", write(tmp_path, "api: 8080\n")])


@pytest.mark.parametrize("subnets,message", [
    ("{id: a, cidr: 10.0.0.0/24, gateway: 10.0.1.1}", r"subnets\[0\]: gateway 10.0.1.1 is outside"),
    ("{id: a, cidr: 10.0.0.1/24, gateway: 10.0.0.1}", r"subnets\[0\]: .*host bits set"),
    ("{id: a, cidr: 10.0.0.0/33, gateway: 10.0.0.1}", r"subnets\[0\]"),
    ("{id: a, cidr: bogus, gateway: 10.0.0.1}", r"subnets\[0\]"),
    ("{id: a, cidr: 10.0.0.0/24, gateway: 10.0.0.300}", r"subnets\[0\]"),
    ("{id: a, cidr: 10.0.0.0/24}", r"subnets\[0\]: needs exactly id, cidr and gateway"),
    ("{id: a, cidr: 10.0.0.0/24, gateway: 10.0.0.1, vlan: 3}", r"needs exactly"),
    ("{id: a, cidr: 10.0.0.0/24, gateway: 10.0.0.1}, {id: a, cidr: 10.0.1.0/24, gateway: 10.0.1.1}",
     r"subnets\[1\]\.id: duplicate id 'a'"),
])
def test_bad_subnet(tmp_path, subnets, message):
    with pytest.raises(ConfigError, match=message):
        load(["--config", write(tmp_path, f"subnets: [{subnets}]\n")])


def test_subnets_must_be_a_list(tmp_path):
    with pytest.raises(ConfigError, match="subnets: must be a list"):
        load(["--config", write(tmp_path, "subnets: {id: a}\n")])


@pytest.mark.parametrize("text,message", [
    ("log_level: loud\n", "log_level: must be one of"),
    ("settle_seconds: 61\n", "settle_seconds"),
    ("settle_seconds: -1\n", "settle_seconds"),
    ("settle_seconds: yes\n", "settle_seconds"),
    ("db: ''\n", "db: must be a file path"),
    ("db: 3\n", "db: must be a file path"),
])
def test_other_bad_values(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load(["--config", write(tmp_path, text)])


def test_api_port_equal_to_of_port_refused():
    with pytest.raises(ConfigError, match="api and of_port both use port 7000"):
        load(["--of-port", "7000", "--api", "127.0.0.1:7000"])


def test_bad_log_level_flag_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        load(["--log-level", "loud"])
    assert exc.value.code == 2
    assert "--log-level" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_ports_free_passes_on_free_ports():
    with socket.socket() as a, socket.socket() as b:  # both open: two distinct ports
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        of_port, api_port = a.getsockname()[1], b.getsockname()[1]
    check_ports_free(Config(of_port=of_port, api_port=api_port))


def test_check_ports_free_reports_a_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = Config(of_port=_free_port(), api_host="127.0.0.1", api_port=port)
        with pytest.raises(ConfigError) as exc:
            check_ports_free(cfg)
    assert str(exc.value) == f"api: cannot listen on 127.0.0.1:{port}: already in use"


def test_check_ports_free_reports_the_openflow_port_in_use():
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"of_port: cannot listen on 0.0.0.0:{port}: already in use"):
            check_ports_free(Config(of_port=port, api_port=_free_port()))


def test_main_reports_config_error(tmp_path, capsys):
    missing = str(tmp_path / "missing.yaml")
    assert manager.main(["--config", missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hub-controller: --config: cannot read ")
    assert "missing.yaml" in err and "No such file or directory" in err
    assert err.count("\n") == 1


def test_main_reports_bad_value(capsys):
    assert manager.main(["--of-port", "8080", "--api", "127.0.0.1:8080"]) == 2
    assert capsys.readouterr().err == "hub-controller: api and of_port both use port 8080\n"


def test_feature_sections_are_validated_by_their_feature(tmp_path):
    cfg = load(["--config", write(tmp_path, "personas: {gateway: '0000000000000b01', "
                                            "poll_seconds: 2}\n")])
    persona = cfg.features["persona"]
    assert (persona.gateway, persona.poll_seconds) == (0xB01, 2.0)
    assert str(persona.nat_pool) == "100.64.0.0/10"
    with pytest.raises(ConfigError, match=r"personas\.gateway: 'zz' is not a datapath id"):
        load(["--config", write(tmp_path, "personas: {gateway: zz}\n")])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) persona\b.*personas"):
        load(["--config", write(tmp_path, "persona: {}\n")])
