"""``edgesteer apply`` end to end: YAML config -> plan -> diff -> a real BIND and a zone file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dns_backends.rfc2136 import TsigKey
from edge.cli import main
from tests.servers_dns import (
    ZONE,
    ServerProcess,
    new_key,
    query,
    start_named_primary,
)


@pytest.fixture
def named(tmp_path: Path) -> Iterator[tuple[ServerProcess, TsigKey]]:
    key = new_key()
    server = start_named_primary(tmp_path / "named", key)
    try:
        yield server, key
    finally:
        server.stop()


def write_config(tmp_path: Path, server: ServerProcess, secret: str) -> Path:
    (tmp_path / "key").write_text(secret + "\n")
    text = f"""version: 1
node: {{name: hk-1, site: hk}}
sites: [{{name: hk}}]
links:
  - {{name: cn2, priority: 1, answers: {{v4: [203.0.113.10, 203.0.113.11]}}}}
  - {{name: pccw, priority: 2, answers: {{v4: [198.51.100.20]}}}}
zones:
  - {{name: {ZONE}, ns: [ns1.{ZONE}]}}
services:
  - name: www.{ZONE}
    pools:
      - {{name: main, endpoints: [{{link: cn2}}]}}
      - {{name: backup, endpoints: [{{link: pccw}}]}}
backends:
  - name: bind
    kind: rfc2136
    server: {server.host}:{server.port}
    timeout: 1
    tsig: {{name: edgesteer, secret_file: {tmp_path / "key"}}}
  - name: files
    kind: zonefile
    path: {tmp_path / "zones" / "{zone}.zone"}
"""
    path = tmp_path / "edgesteer.yaml"
    path.write_text(text)
    return path


def test_dry_run_shows_the_diff_and_changes_nothing_then_apply(
        tmp_path: Path, named: tuple[ServerProcess, TsigKey],
        capsys: pytest.CaptureFixture[str]) -> None:
    server, key = named
    cfg = str(write_config(tmp_path, server, key.secret))
    assert main(["apply", cfg, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"backend bind (rfc2136 127.0.0.1:{server.port})" in out
    assert "+ www.example.hk. A ttl=60 203.0.113.10 203.0.113.11" in out
    assert "1 to add, 0 to change, 0 to delete." in out
    assert query(server.host, server.port, "www.example.hk")[1] == set()
    assert not (tmp_path / "zones").exists()

    assert main(["apply", cfg]) == 0
    out = capsys.readouterr().out
    assert out.count("applied 1 changes, verified.") == 2
    assert query(server.host, server.port, "www.example.hk")[1] == {"203.0.113.10",
                                                                     "203.0.113.11"}
    assert "203.0.113.11" in (tmp_path / "zones" / f"{ZONE}.zone").read_text()

    # what-if cn2 is down: the backup tier goes out, shown as a change
    assert main(["apply", cfg, "--state", "cn2=down", "--backend", "bind", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (bind,) = report["backends"]
    assert bind["ok"] and bind["applied"] == 1
    (change,) = bind["targets"][0]["changes"]
    assert change["action"] == "update" and change["after"]["values"] == ["198.51.100.20"]
    assert change["after"]["ttl"] == 15  # failover TTL
    assert query(server.host, server.port, "www.example.hk")[1] == {"198.51.100.20"}


def test_a_failing_backend_is_named_and_the_others_still_apply(
        tmp_path: Path, named: tuple[ServerProcess, TsigKey],
        capsys: pytest.CaptureFixture[str]) -> None:
    server, _ = named
    cfg = str(write_config(tmp_path, server, new_key().secret))  # not the server's key
    assert main(["apply", cfg]) == 1
    captured = capsys.readouterr()
    assert "backend bind: FAILED: bind: example.hk: zone transfer: TSIG key edgesteer " \
           "(hmac-sha256) rejected by the server: BADSIG" in captured.err
    assert "applied 1 changes, verified." in captured.out  # the zone file went out
    assert main(["apply", cfg, "--backend", "nope"]) == 2
    assert "no backend nope (backends: bind, files)" in capsys.readouterr().err


def test_plan_backends_shows_the_per_backend_diff_and_writes_nothing(
        tmp_path: Path, named: tuple[ServerProcess, TsigKey],
        capsys: pytest.CaptureFixture[str]) -> None:
    server, key = named
    cfg = str(write_config(tmp_path, server, key.secret))
    assert main(["plan", cfg, "--backends"]) == 0
    out = capsys.readouterr().out
    assert f"backend bind (rfc2136 127.0.0.1:{server.port})" in out
    assert "+ www.example.hk. A ttl=60 203.0.113.10 203.0.113.11" in out
    assert "changes, verified" not in out
    assert query(server.host, server.port, "www.example.hk")[1] == set()
    assert not (tmp_path / "zones").exists()
    assert main(["plan", cfg]) == 0
    assert "backend bind" not in capsys.readouterr().out  # only when asked

    assert main(["apply", cfg, "--backend", "bind"]) == 0
    capsys.readouterr()
    assert main(["plan", cfg, "--backends", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    bind, files = report["backends"]
    assert bind["name"] == "bind" and bind["targets"][0]["changes"] == []
    assert files["targets"][0]["changes"][0]["action"] == "create"

    bad = str(write_config(tmp_path, server, new_key().secret))
    assert main(["plan", bad, "--backends"]) == 1
    assert "backend bind: FAILED" in capsys.readouterr().err
