"""What the lab shows: the live table of links and answers, event lines, the summary text."""

from __future__ import annotations

from collections.abc import Sequence

from edge.config.schema import Config
from edge.health.state import HealthSnapshot, HealthState, LinkHealth
from edge.plan import AnswerSet, Plan

CLEAR = "\x1b[H\x1b[2J"

_STATE_MARK = {
    HealthState.UP: "up",
    HealthState.DEGRADED: "DEGRADED",
    HealthState.FALLING: "falling",
    HealthState.RISING: "rising",
    HealthState.DOWN: "DOWN",
    HealthState.UNKNOWN: "unknown",
}


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def link_rows(config: Config, snapshot: HealthSnapshot) -> list[str]:
    rows = [f"{'link':<10} {'carrier':<24} {'tier':>4} {'p50 ms':>8} {'p95 ms':>8} "
            f"{'loss':>6} {'jitter':>7}  state"]
    for link in config.links:
        lh: LinkHealth | None = snapshot.links.get(link.name)
        q = lh.quality if lh else None
        state = _STATE_MARK[lh.state] if lh else "unknown"
        loss = f"{q.loss * 100:.0f}%" if q else "-"
        rows.append(
            f"{link.name:<10} {link.carrier[:24]:<24} {link.priority:>4} "
            f"{_ms(q.rtt_p50 if q else None):>8} {_ms(q.rtt_p95 if q else None):>8} "
            f"{loss:>6} {_ms(q.jitter_s if q else None):>7}  {state}"
            + (f"  ({lh.reason})" if lh and lh.state != HealthState.UP and lh.reason else ""))
    return rows


def describe_answers(aset: AnswerSet) -> str:
    parts = [f"{a.value}@{a.link} w{a.weight:g}" for a in aset.for_type("A")]
    flags = " fail-open" if aset.fail_open else ""
    return f"tier {aset.tier} ttl {aset.ttl}{flags}: " + ", ".join(parts)


def answer_rows(plan: Plan | None) -> list[str]:
    if plan is None:
        return ["(no plan yet)"]
    rows = [f"plan v{plan.version}"]
    for (service, segment), aset in sorted(plan.answers.items()):
        rows.append(f"  {service:<18} {segment:<10} {describe_answers(aset)}")
    return rows


def anycast_rows(plan: Plan | None) -> list[str]:
    """One row per (prefix, session): what BGP says there."""
    if plan is None or not plan.announcements:
        return []
    rows = []
    for (prefix, session), a in sorted(plan.announcements.items()):
        what = "withdrawn" if a.action == "withdraw" else \
            f"announced, prepend {a.prepend}" + (f", med {a.med}" if a.med is not None else "")
        rows.append(f"  {prefix:<18} via {session:<10} {what}")
    return rows


def screen(config: Config, scenario_name: str, elapsed: float, duration: float,
           snapshot: HealthSnapshot, plan: Plan | None, events: Sequence[str],
           dig_commands: Sequence[str], width: int = 0) -> str:
    """The live screen; with ``width`` every line is cut to fit the terminal."""
    lines = [f"edgesteer lab — scenario {scenario_name} — t={elapsed:5.1f}s of {duration:.0f}s",
             "", *link_rows(config, snapshot), "", "DNS answers (A):", *answer_rows(plan), "",
             *(["Anycast (BGP):", *anycast_rows(plan), ""] if anycast_rows(plan) else []),
             "Query it:", *(f"  {c}" for c in dig_commands), "", "Events:",
             *(f"  {e}" for e in events[-12:])]
    if width > 0:
        lines = [ln if len(ln) <= width else ln[:width - 1] + "…" for ln in lines]
    return "\n".join(lines)
