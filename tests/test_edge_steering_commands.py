"""`explain` (client / ECS, QNAME QTYPE, persisted health) and `plan` (diff against the
last applied plan)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.cli import main
from edge.config.loader import load_config
from edge.health.state import HealthState
from edge.steering.planner import plan as make_plan
from edge.steering.statefile import save_engine_state, state_dir
from tests.builders import snapshot

CONFIG = """
version: 1
node: {name: hk-1, site: hk}
sites: [{name: hk}]
guard: {state_dir: st}
links:
  - {name: cn2, priority: 1, answers: {v4: [203.0.113.10], v6: ["2001:db8::10"]}}
  - {name: pccw, priority: 2, answers: {v4: [198.51.100.20]}}
zones: [{name: example.hk, ns: [ns1.example.hk]}]
segments:
  - {name: ct-users, cidrs: [202.96.0.0/13]}
services:
  - name: www.example.hk
    pools:
      - {name: main, endpoints: [{link: cn2}, {link: pccw}]}
      - {name: backup, endpoints: [{link: pccw}]}
policies:
  - service: www.example.hk
    rules:
      - {segment: ct-users, pools: [backup]}
"""


@pytest.fixture
def cfg(tmp_path: Path) -> str:
    path = tmp_path / "edge.yaml"
    path.write_text(CONFIG)
    return str(path)


def _persist(cfg: str, states: dict[str, HealthState]) -> None:
    config = load_config(cfg)
    snap = snapshot(states)
    directory = state_dir(config)
    assert directory is not None
    save_engine_state(directory, snap, make_plan(config, snap, version=7, now=1.0), 1.0)


def test_explain_ecs_qname_qtype(cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--config", cfg, "--ecs", "202.96.1.0/24",
                 "--client", "192.0.2.53", "www.example.hk.", "A", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["segment"] == "ct-users"
    assert body["why_segment"] == "client ECS 202.96.1.0/24 matches segment 'ct-users'"
    assert [a["value"] for a in body["answer_set"]["answers"]] == ["198.51.100.20"]
    assert body["health_from"] == "assumed up"


def test_explain_resolver_address_and_persisted_health(
        cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    _persist(cfg, {"cn2": HealthState.DOWN, "pccw": HealthState.UP})
    assert main(["explain", "--config", cfg, "--client", "192.0.2.53", "www.example.hk"]) == 0
    out = capsys.readouterr().out
    assert "client resolver 192.0.2.53 (no ECS) matches segment 'default'" in out
    assert "cn2: down (persisted by the engine (down))" in out
    assert "198.51.100.20" in out and "[tier.skipped] tier 1 skipped" in out
    assert main(["explain", "--config", cfg, "www.example.hk", "AAAA", "--json",
                 "--state", "cn2=up"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [a["value"] for a in body["answer_set"]["answers"]] == ["2001:db8::10"]


def test_explain_old_form_and_errors(cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", cfg, "www.example.hk"]) == 0
    assert "tier 1 serves" in capsys.readouterr().out
    assert main(["explain", "--config", cfg, "www.example.hk", "MX"]) == 2
    assert "QTYPE one of A, AAAA, CNAME, ANY" in capsys.readouterr().err
    assert main(["explain", "--config", cfg, "--ecs", "nope", "www.example.hk"]) == 2
    assert main(["explain", "--config", cfg, "ftp.example.hk"]) == 2


def test_plan_diffs_against_the_applied_plan(cfg: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--config", cfg]) == 0
    assert "diff: no applied plan on record" in capsys.readouterr().out
    _persist(cfg, {"cn2": HealthState.UP, "pccw": HealthState.UP})
    assert main(["plan", "--config", cfg, "--state", "cn2=down"]) == 0
    out = capsys.readouterr().out
    assert "diff against the applied plan v7" in out
    assert "~ www.example.hk [default]:" in out and "tier 1 -> 2" in out
    assert main(["plan", cfg, "--json"]) == 0           # same states: no diff
    body = json.loads(capsys.readouterr().out)
    assert body["diff"] == [] and body["applied"]["version"] == 7
    assert body["plan"]["version"] == 8
