"""Readable text for plans, answer sets and diffs, from the reasons the plan carries.

Nothing here recomputes a decision: if a reason is missing, the planner must add it.
"""

from __future__ import annotations

from edge.plan import (
    Announcement,
    AnnouncementChange,
    AnswerChange,
    AnswerSet,
    Plan,
    PlanDiff,
    WeightedAnswer,
)


def _header(a: AnswerSet) -> str:
    flags = []
    if a.fail_open:
        flags.append("FAIL-OPEN")
    elif a.failing_over:
        flags.append("failing over")
    tail = f" ({', '.join(flags)})" if flags else ""
    return (f"{a.service} [{a.segment}]: tier {a.tier}, ttl {a.ttl}, "
            f"max {a.max_answers} answers{tail}")


def _answer_line(w: WeightedAnswer) -> str:
    return (f"{w.rrtype:<5} {w.value:<40} weight {w.weight:<7g} "
            f"link {w.link}, pool {w.pool}, tier {w.tier}")


def explain_answer_set(a: AnswerSet) -> str:
    lines = [_header(a)]
    if a.answers:
        lines += [f"  {_answer_line(w)}" for w in a.answers]
    else:
        lines.append("  (no answers)")
    if a.reasons:
        lines.append("  why:")
        lines += [f"    - [{r.code}] {r.detail}" for r in a.reasons]
    return "\n".join(lines)


def explain_plan(plan: Plan) -> str:
    head = (f"plan v{plan.version} (checksum {plan.checksum()}, inputs {plan.inputs_digest or '-'}"
            f", {len(plan.answers)} answer sets)")
    return "\n\n".join([head, *(explain_answer_set(a) for a in plan.answers.values())])


def _values(a: AnswerSet) -> str:
    if not a.answers:
        return "(none)"
    return ", ".join(f"{w.value}@{w.weight:g}" for w in a.answers)


def _change(c: AnswerChange) -> str:
    service, segment = c.key
    if c.before is None and c.after is not None:
        return f"+ {service} [{segment}]: new\n" + _indent(explain_answer_set(c.after))
    if c.after is None and c.before is not None:
        return f"- {service} [{segment}]: removed (was {_values(c.before)})"
    assert c.before is not None and c.after is not None
    b, a = c.before, c.after
    lines = [f"~ {service} [{segment}]:"]
    if b.tier != a.tier:
        lines.append(f"    tier {b.tier} -> {a.tier}")
    if b.ttl != a.ttl:
        lines.append(f"    ttl {b.ttl} -> {a.ttl}")
    if b.fail_open != a.fail_open:
        lines.append(f"    fail-open {'on' if a.fail_open else 'off'}")
    lines.append(f"    answers {_values(b)} -> {_values(a)}")
    if a.reasons:
        lines.append("    why:")
        lines += [f"      - [{r.code}] {r.detail}" for r in a.reasons]
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _route(a: Announcement | None) -> str:
    if a is None:
        return "nothing"
    if a.action == "withdraw":
        return "withdrawn"
    attrs = [f"med {a.med}"] if a.med is not None else []
    if a.prepend:
        attrs.append(f"prepend {a.prepend}")
    attrs += [f"community {c}" for c in a.communities + a.large_communities]
    return "announced" + (f" ({', '.join(attrs)})" if attrs else "")


def _route_change(c: AnnouncementChange) -> str:
    prefix, session = c.key
    lines = [f"~ route {prefix} via {session}: {_route(c.before)} -> {_route(c.after)}"]
    if c.after is not None and c.after.reasons:
        lines.append("    why:")
        lines += [f"      - [{r.code}] {r.detail}" for r in c.after.reasons]
    return "\n".join(lines)


def explain_diff(diff: PlanDiff) -> str:
    """The changes of ``diff``, answer sets first, then anycast announcements."""
    if not diff:
        return "no changes"
    return "\n".join([*(_change(c) for c in diff.changes),
                      *(_route_change(c) for c in diff.announcement_changes)])
