"""The all-down policy per pool: fail-open (default), a fallback pool, fail-closed NODATA."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config.loader import ConfigInvalid, load_config
from edge.health.state import HealthState
from edge.plan import Plan
from edge.steering.guard import EmptyAnswers, guard
from edge.steering.planner import plan
from tests.builders import endpoint, link, make_config, policy, pool, service, snapshot

S = HealthState
KEY = ("www.example.hk", "default")


def _plan(all_down: str, states: dict[str, HealthState], *, fail_open: bool = True) -> Plan:
    links = [link("a", index=10), link("b", index=11), link("sorry", priority=3, index=99)]
    svc = service("www.example.hk",
                  pool("main", endpoint("a"), endpoint("b"), all_down=all_down,  # type: ignore[arg-type]
                       fallback="maint" if all_down == "fallback" else None),
                  pool("maint", endpoint("sorry", 10.0)))
    cfg = make_config(links, [svc], fail_open=fail_open,
                      policies=[policy("www.example.hk", ("default", ["main"]))])
    return plan(cfg, snapshot(states), version=1, now=0.0)


DOWN = {"a": S.DOWN, "b": S.DOWN, "sorry": S.DOWN}


def test_fail_open_is_the_default() -> None:
    a = _plan("fail_open", DOWN).answers[KEY]
    assert a.fail_open and a.values() == {"203.0.113.10", "203.0.113.11"}


def test_fallback_pool_serves_whatever_its_health() -> None:
    a = _plan("fallback", DOWN).answers[KEY]
    assert a.values() == {"203.0.113.99"} and not a.fail_open
    assert any(r.code == "all_down.fallback" for r in a.reasons)
    assert _plan("fallback", {"a": S.UP, "b": S.DOWN, "sorry": S.UP}).answers[KEY].values() \
        == {"203.0.113.10"}                               # only when all are down


def test_fail_closed_answers_nodata_and_the_guard_lets_it_go() -> None:
    up = _plan("fail_closed", {"a": S.UP, "b": S.UP, "sorry": S.UP})
    down = _plan("fail_closed", DOWN)
    a = down.answers[KEY]
    assert a.answers == () and a.reasons[-2].code == "all_down.fail_closed"
    assert guard(up, down, make_config([link("a")]).guard) is down
    # a fail-open pool with guard.fail_open off still needs --force to go empty
    up2 = _plan("fail_open", {"a": S.UP, "b": S.UP, "sorry": S.UP}, fail_open=False)
    down2 = _plan("fail_open", DOWN, fail_open=False)
    with pytest.raises(EmptyAnswers):
        guard(up2, down2, make_config([link("a")], fail_open=False).guard)


BASE = """
version: 1
node: {name: hk-1, site: hk}
sites: [{name: hk}]
links:
  - {name: cn2, priority: 1, answers: {v4: [203.0.113.10]}}
  - {name: pccw, priority: 2, answers: {v4: [198.51.100.20]}}
zones: [{name: example.hk, ns: [ns1.example.hk]}]
services:
  - name: www.example.hk
    pools:
      - {name: main, endpoints: [{link: cn2}], all_down: fallback, fallback: %s}
      - {name: maint, endpoints: [{link: pccw}]}
"""


def test_config_fallback_must_name_another_pool(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(BASE % "maint")
    pools = load_config(str(good)).service("www.example.hk").pools
    assert (pools[0].all_down, pools[0].fallback) == ("fallback", "maint")
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE % "nope")
    with pytest.raises(ConfigInvalid) as info:
        load_config(str(bad))
    assert "all_down: fallback needs `fallback` naming another pool" in str(info.value)
