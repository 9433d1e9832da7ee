"""Trace tests through replay: the whole path sample -> window -> health -> plan.

Traces are generated here, seeded. Settings are the config defaults (window 10, rise 3,
fall 3, hold-down 10 s, stale after 5 s, grace 5 s, majority quorum, damping 1000 / 2500 /
750 / 120 s) unless a test says otherwise.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest

from edge.config.schema import Config, DampingSettings, HealthSettings
from edge.health.state import HealthState
from edge.replay import AnswerDecision, ReplayResult, replay
from probes.measurement import PathKey, ProbeError, ProbeKind, Sample
from tests.builders import health, link, make_config, one_pool_per_link

S = HealthState
SERVICE = "www.example.hk"
CN2 = "203.0.113.10"
PCCW = "203.0.113.20"

# rtt in ms for one sample, or None when the probe is lost
RttFn = Callable[[PathKey, float, random.Random], float | None]


def config(hs: HealthSettings | None = None) -> Config:
    links = [link("cn2", priority=1, index=10), link("pccw", priority=2, index=20)]
    return make_config(links, [one_pool_per_link(links)],
                       health_settings=hs or health(stale_grace_s=5.0, hold_down_s=10.0))


def trace(paths: Sequence[PathKey], duration_s: float, interval_s: float, rtt: RttFn,
          seed: int = 1) -> list[Sample]:
    rng = random.Random(seed)
    out = []
    n = int(duration_s / interval_s)
    for i in range(n):
        for k, p in enumerate(paths):
            at = 1_700_000_000.0 + i * interval_s + k * 0.001
            value = rtt(p, i * interval_s, rng)
            if value is None:
                out.append(Sample(p, ProbeKind.TCP, at, False, None,
                                  error=ProbeError("timeout", "no reply")))
            else:
                out.append(Sample(p, ProbeKind.TCP, at, True, value / 1000.0))
    return out


def clean(rng: random.Random, base: float = 40.0) -> float:
    return max(1.0, rng.gauss(base, 1.5))


def serving_values(r: ReplayResult) -> list[tuple[float, frozenset[str]]]:
    """(time, answer values) each time what users get changes in value."""
    out: list[tuple[float, frozenset[str]]] = []
    for d in r.answers(SERVICE, "default"):
        values = frozenset(v for v, _ in d.values())
        if not out or out[-1][1] != values:
            out.append((d.at - (r.start or 0.0), values))
    return out


def failovers(r: ReplayResult) -> list[LinkChange]:
    return [(d.at - (r.start or 0.0), d.link, d.new) for d in r.links()
            if d.new in (S.DOWN, S.RISING)]


LinkChange = tuple[float, str, HealthState]

PATHS = [PathKey("hk-1", "cn2", "pop"), PathKey("hk-1", "pccw", "pop")]


# (a) benign jitter: rtt spikes to 3x p50 for under 3 s, 2 % loss bursts -> no failover

def benign() -> RttFn:
    """Per path: a spike to 3x p50 lasting 0.5 .. 2.9 s about every 30 s, and bursts of
    2 % loss: a 50-probe stretch about every 150 probes that loses one probe (2 %) at a
    random place in it."""
    spike: dict[PathKey, tuple[float, float]] = {}
    lost_at: dict[PathKey, int] = {}
    count: dict[PathKey, int] = {}

    def rtt(p: PathKey, t: float, rng: random.Random) -> float | None:
        i = count[p] = count.get(p, -1) + 1
        if i % 150 == 0:                        # a new burst: one loss in its 50 probes
            lost_at[p] = i + rng.randrange(50)
        if i == lost_at.get(p):
            return None
        start, length = spike.get(p, (-100.0, 0.0))
        if t >= start + 10.0 and rng.random() < 0.01:
            spike[p] = start, length = t, rng.uniform(0.5, 2.9)
        if start <= t < start + length:
            return 3.0 * 40.0 + rng.gauss(0, 2)
        return clean(rng)

    return rtt


@pytest.mark.parametrize(("seed", "interval_s"), [(1, 1.0), (2, 1.0), (3, 0.2), (4, 0.2)])
def test_a_benign_jitter_never_fails_over(seed: int, interval_s: float) -> None:
    samples = trace(PATHS, 900.0, interval_s, benign(), seed)
    slow = sum(1 for s in samples if s.rtt_s is not None and s.rtt_s > 0.1)
    lost = sum(1 for s in samples if not s.ok)
    assert slow >= 10 and lost >= 5, (slow, lost)  # the trace does hold spikes and losses
    r = replay(config(), samples)
    assert failovers(r) == []
    assert len(serving_values(r)) == 1             # users always got the same answers
    assert {d.new for d in r.links()} <= {S.UP}


def test_a_control_without_evidence_rule_a_lost_probe_is_ten_percent() -> None:
    """Control: the same kind of single loss, made twice within a window, does fail over."""
    def rtt(p: PathKey, t: float, rng: random.Random) -> float | None:
        if p.link == "cn2" and t in (30.0, 32.0):
            return None
        return clean(rng)

    r = replay(config(), trace(PATHS, 60.0, 1.0, rtt))
    assert [(t, link, st) for t, link, st in failovers(r)][:1] == [(34.0, "cn2", S.DOWN)]


# (b) sustained 20 % loss -> failover within the fall count plus one interval

@pytest.mark.parametrize("interval_s", [0.2, 1.0])
def test_b_sustained_loss_fails_over_within_fall_plus_one(interval_s: float) -> None:
    onset = 30.0
    lost_every = 5                                # exactly 20 %: every 5th probe lost

    def rtt(p: PathKey, t: float, rng: random.Random) -> float | None:
        i = round((t - onset) / interval_s)
        if p.link == "cn2" and t >= onset and i % lost_every == 0:
            return None
        return clean(rng)

    hs = health(stale_grace_s=5.0, hold_down_s=10.0)
    r = replay(config(hs), trace(PATHS, 60.0, interval_s, rtt))
    down = [t for t, link, st in failovers(r) if link == "cn2" and st is S.DOWN]
    assert down, r.links()
    # the window first holds the evidence (2 lost probes) at the second loss
    evidence_at = onset + lost_every * interval_s
    assert down[0] <= evidence_at + (hs.fall + 1) * interval_s + 1e-6
    if interval_s == 0.2:
        assert down[0] - onset < 3.0              # the goal at 200 ms probing
    switch = [t for t, values in serving_values(r) if values == frozenset({PCCW})]
    assert switch and switch[0] == pytest.approx(down[0])


# (c) flapping every 5 s -> suppressed after 3 flaps, at most 3 answer changes in 60 s

def flapping(p: PathKey, t: float, rng: random.Random) -> float | None:
    if p.link == "cn2" and t >= 10.0 and int((t - 10.0) // 5.0) % 2 == 0:
        return None
    return clean(rng)


def _changes_in_any_60s(times: list[float]) -> int:
    return max((sum(1 for u in times if t <= u < t + 60.0) for t in times), default=0)


def test_c_flapping_link_is_suppressed() -> None:
    r = replay(config(), trace(PATHS, 180.0, 0.2, flapping))
    changes = [t for t, _ in serving_values(r)][1:]   # the first entry is the initial plan
    assert 1 <= _changes_in_any_60s(changes) <= 3, serving_values(r)
    flaps = [d for d in r.links("cn2")]
    suppressed = [d for d in flaps if d.reason.startswith("suppressed")]
    assert suppressed, flaps
    served_flaps = [d for d in flaps if d.at < suppressed[0].at and
                    d.old.serving != d.new.serving and S.UNKNOWN not in (d.old, d.new)]
    assert len(served_flaps) <= 3
    assert r.plan is not None and r.plan.get(SERVICE, "default") is not None
    final = r.plan.get(SERVICE, "default")
    assert final is not None and final.values() == frozenset({PCCW})


def test_c_control_without_damping_it_flaps_more() -> None:
    hs = health(stale_grace_s=5.0, hold_down_s=10.0, damping=DampingSettings(penalty=0.0))
    r = replay(config(hs), trace(PATHS, 180.0, 0.2, flapping))
    changes = [t for t, _ in serving_values(r)][1:]
    assert _changes_in_any_60s(changes) > 3


# (d) one of three vantage points at 100 % loss, two clean -> no failover

def three_nodes(link_name: str = "cn2") -> list[PathKey]:
    return [PathKey(n, link_name, "pop") for n in ("hk-1", "hk-2", "hk-3")]


def sick_hk3(p: PathKey, t: float, rng: random.Random) -> float | None:
    if p.node == "hk-3" and t >= 20.0:
        return None
    return clean(rng)


def test_d_one_sick_vantage_point_moves_nothing() -> None:
    paths = three_nodes("cn2") + three_nodes("pccw")
    r = replay(config(), trace(paths, 120.0, 0.2, sick_hk3))
    assert failovers(r) == []
    assert len(serving_values(r)) == 1
    assert r.snapshot is not None
    down = sorted(str(k) for k, ph in r.snapshot.paths.items() if ph.state is S.DOWN)
    assert down == ["hk-3/cn2/pop", "hk-3/pccw/pop"]    # the sick probe host saw it down


def test_d_control_with_quorum_any_it_fails_over() -> None:
    hs = replace(health(stale_grace_s=5.0), quorum="any")
    paths = three_nodes("cn2") + three_nodes("pccw")
    r = replay(config(hs), trace(paths, 120.0, 0.2, sick_hk3))
    assert any(link == "cn2" and st is S.DOWN for _, link, st in failovers(r))


def test_answer_decisions_carry_before_and_after() -> None:
    def rtt(p: PathKey, t: float, rng: random.Random) -> float | None:
        return None if p.link == "cn2" and t >= 20.0 else clean(rng)

    r = replay(config(), trace(PATHS, 40.0, 1.0, rtt))
    changed = [d for d in r.answers(SERVICE) if d.before is not None
               and d.before.values() != (d.after.values() if d.after else None)]
    assert changed and isinstance(changed[0], AnswerDecision)
    assert changed[0].before is not None and changed[0].before.values() == frozenset({CN2})
    assert changed[0].after is not None and changed[0].after.values() == frozenset({PCCW})
    js = r.to_json()
    assert js["records"] == 80 and {d["type"] for d in js["decisions"]} == {"link", "answers"}
