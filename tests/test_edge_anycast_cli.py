"""``edgesteer anycast``: the anycast plan with reasons, what-if states, and the renderings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.cli import main
from tests.test_edge_anycast_planner import BASE


@pytest.fixture
def cfg_file(tmp_path: Path) -> Path:
    path = tmp_path / "anycast.yaml"
    path.write_text(BASE)
    return path


def test_text_with_reasons_and_render(cfg_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["anycast", str(cfg_file), "--state", "cn2=down", "--state", "ntt=degraded",
                 "--render"]) == 0
    out = capsys.readouterr().out
    assert "192.0.2.0/24         via cn2          WITHDRAW" in out
    assert "[bgp.withdraw] link cn2 is down (hard down): withdrawn" in out
    assert "[bgp.degraded] link ntt is degraded: +3 prepend(s), MED 900" in out
    assert "--- speaker main (bird) ---" in out and "protocol bgp es_pccw {" in out


def test_json(cfg_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["anycast", str(cfg_file), "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert {(a["prefix"], a["session"], a["action"]) for a in body} >= {
        ("192.0.2.0/24", "cn2", "announce"), ("2001:db8::/32", "ntt", "announce")}


def test_exabgp_render(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "exa.yaml"
    path.write_text(BASE.replace("{name: main, kind: bird, socket: /tmp/x.ctl, include: "
                                 "/tmp/x.conf}", "{name: main, kind: exabgp}"))
    assert main(["anycast", str(path), "--render", "--state", "pccw=down"]) == 0
    out = capsys.readouterr().out
    assert "neighbor 127.0.0.1 local-ip 127.0.0.11 announce route 192.0.2.0/24" in out
    assert "neighbor 127.0.0.1 local-ip 127.0.0.12 withdraw route 192.0.2.0/24" in out


def test_bad_state(cfg_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["anycast", str(cfg_file), "--state", "nope=down"]) == 2
    assert "--state 'nope=down'" in capsys.readouterr().err


def test_plan_and_explain_show_anycast(cfg_file: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(cfg_file), "--state", "cn2=down"]) == 0
    out = capsys.readouterr().out
    assert "anycast (5 prefix/session entries):" in out
    assert "[bgp.withdraw] link cn2 is down (hard down): withdrawn" in out
    assert main(["plan", str(cfg_file), "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert len(body["plan"]["announcements"]) == 5
    assert main(["explain", str(cfg_file), "192.0.2.0/24", "--state", "ntt=degraded"]) == 0
    out = capsys.readouterr().out
    assert "192.0.2.0/24         via ntt          announce, tier 2, prepend 5" in out
    assert "2001:db8::/32" not in out
    assert main(["explain", str(cfg_file), "2001:db8::/32", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [a["session"] for a in body["announcements"]] == ["cn2", "ntt"]
