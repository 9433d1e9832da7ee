"""A compact JSON form of a Plan for the engine's state file (``edge.steering.statefile``).

``Plan.to_json`` spells every answer set out in full, reasons and all: the readable form
that ``edgesteer plan --json`` prints. At 10,000 services x 50 segments that is 500,000
answer sets, over 600 MiB and minutes to write, while most of them are the same answer
set under another segment's name (a planner computes one per group of rules and copies
it per segment). This form writes each distinct answer set (a *body*: ttl, tier, flags,
answers, reasons) once, each distinct reason once, and per service the list of
(segment, body) pairs, so the file grows with the groups, not with the segments.

Two answer sets share a body when they hold the very same ``answers`` and ``reasons``
tuples (what a copy for another segment holds; ``edge.steering.incremental``) and the
same scalars: equal but separately built sets get a body each, which costs space, never
correctness. :func:`decode` gives back a plan with the same answers, announcements and
checksum; the copies it makes share their tuples again.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from edge.plan import (
    AnswerKey,
    AnswerSet,
    Plan,
    Reason,
    WeightedAnswer,
    announcement_from_json,
    plan_from_json,
    reason_from_json,
    rrtype,
)

FORM = "grouped-1"


def encode(plan: Plan) -> dict[str, Any]:
    """``plan`` as a JSON-able dict in the grouped form (module docstring)."""
    with _gc_paused():
        return _encode(plan)


def from_json(d: Mapping[str, Any]) -> Plan:
    """A plan in either JSON form: grouped (this module) or full (``Plan.to_json``, what
    earlier versions wrote to the state file and the Redis plan history)."""
    return decode(d) if isinstance(d, Mapping) and "form" in d else plan_from_json(d)


def decode(d: Mapping[str, Any]) -> Plan:
    """The inverse of :func:`encode`. Raises KeyError, TypeError, ValueError or IndexError
    on input that is not a plan in this form."""
    if d.get("form") != FORM:
        raise ValueError(f"not a plan in the {FORM} form: form {d.get('form')!r}")
    with _gc_paused():
        return _decode(d)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Every object made here is acyclic; with a large plan alive the cyclic collector's
    full passes, set off by the hundreds of thousands of small lists and sets made, took
    most of the time."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _encode(plan: Plan) -> dict[str, Any]:
    reasons: list[list[Any]] = []
    reason_ids: dict[int, int] = {}
    bodies: list[list[Any]] = []
    body_ids: dict[tuple[Any, ...], int] = {}
    keys: dict[str, list[list[Any]]] = {}
    for (service, segment), a in plan.answers.items():
        bkey = (id(a.answers), id(a.reasons), a.ttl, a.tier, a.failing_over, a.fail_open,
                a.max_answers)
        body = body_ids.get(bkey)
        if body is None:
            body = body_ids[bkey] = len(bodies)
            refs = []
            for r in a.reasons:
                ri = reason_ids.get(id(r))
                if ri is None:
                    ri = reason_ids[id(r)] = len(reasons)
                    reasons.append([r.code, r.detail, dict(r.inputs)])
                refs.append(ri)
            bodies.append([a.ttl, a.tier, a.failing_over, a.fail_open, a.max_answers,
                           [[w.rrtype, w.value, w.weight, w.link, w.pool, w.tier]
                            for w in a.answers], refs])
        keys.setdefault(service, []).append([segment, body])
    out: dict[str, Any] = {"form": FORM, "version": plan.version,
                           "created_at": plan.created_at,
                           "inputs_digest": plan.inputs_digest,
                           "reasons": reasons, "bodies": bodies, "keys": keys}
    if plan.announcements:
        out["announcements"] = [plan.announcements[k].to_json()
                                for k in sorted(plan.announcements)]
    return out


def _decode(d: Mapping[str, Any]) -> Plan:
    reasons = [reason_from_json({"code": c, "detail": t, "inputs": i})
               for c, t, i in d["reasons"]]
    bodies: list[tuple[int, int, bool, bool, int, tuple[WeightedAnswer, ...],
                       tuple[Reason, ...]]] = []
    for ttl, tier, failing_over, fail_open, max_answers, answers, refs in d["bodies"]:
        bodies.append((int(ttl), int(tier), bool(failing_over), bool(fail_open),
                       int(max_answers),
                       tuple(WeightedAnswer(rrtype(rt), str(v), float(w), str(lk), str(p),
                                            int(t))
                             for rt, v, w, lk, p, t in answers),
                       tuple(reasons[i] for i in refs)))
    answers_out: dict[AnswerKey, AnswerSet] = {}
    for service, pairs in d["keys"].items():
        for segment, bi in pairs:
            ttl, tier, fo, fopen, mx, ans, rs = bodies[bi]
            answers_out[(str(service), str(segment))] = AnswerSet(
                str(service), str(segment), ttl, tier, ans, rs, fo, fopen, mx)
    routes = {(r.prefix, r.session): r
              for r in map(announcement_from_json, d.get("announcements", ()))}
    return Plan(version=int(d["version"]), created_at=float(d["created_at"]),
                inputs_digest=str(d.get("inputs_digest", "")),
                answers=MappingProxyType(answers_out), announcements=MappingProxyType(routes))
