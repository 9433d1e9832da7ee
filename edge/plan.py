"""Leaf types of the engine's output: an immutable, versioned, diffable Plan with reasons.

A Plan says, for every (service, segment), which answers to give with which weights and
TTL, and why. Backends render it; ``explain`` prints the reasons it carries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from types import MappingProxyType
from typing import Any, Literal

RRType = Literal["A", "AAAA", "CNAME"]
AnnounceAction = Literal["announce", "withdraw"]


@dataclass(frozen=True, slots=True)
class Reason:
    """One step of why an answer set is what it is. ``code`` is stable; ``detail`` is prose."""

    code: str
    detail: str
    inputs: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.detail, "inputs": dict(self.inputs)}


@dataclass(frozen=True, slots=True, order=True)
class WeightedAnswer:
    rrtype: RRType
    value: str
    weight: float
    link: str
    pool: str
    tier: int

    def to_json(self) -> dict[str, Any]:
        return {"rrtype": self.rrtype, "value": self.value, "weight": self.weight,
                "link": self.link, "pool": self.pool, "tier": self.tier}


@dataclass(frozen=True, slots=True)
class AnswerSet:
    """The answers for one (service, segment). ``tier`` is the failover tier serving now."""

    service: str
    segment: str
    ttl: int
    tier: int
    answers: tuple[WeightedAnswer, ...]
    reasons: tuple[Reason, ...] = ()
    failing_over: bool = False
    fail_open: bool = False
    max_answers: int = 0

    def values(self, rrtype: RRType | None = None) -> frozenset[str]:
        return frozenset(a.value for a in self.answers if rrtype is None or a.rrtype == rrtype)

    def for_type(self, rrtype: RRType) -> tuple[WeightedAnswer, ...]:
        return tuple(a for a in self.answers if a.rrtype == rrtype)

    def content(self) -> tuple[Any, ...]:
        """What a user would see: ignores reasons, so two plans compare on substance."""
        return (self.ttl, self.tier, tuple(sorted(self.answers)), self.fail_open)

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service, "segment": self.segment, "ttl": self.ttl,
            "tier": self.tier, "failing_over": self.failing_over, "fail_open": self.fail_open,
            "max_answers": self.max_answers,
            "answers": [a.to_json() for a in self.answers],
            "reasons": [r.to_json() for r in self.reasons],
        }


AnswerKey = tuple[str, str]  # (service, segment)
AnnouncementKey = tuple[str, str]  # (prefix, session); a session is named after its link


@dataclass(frozen=True, slots=True)
class Announcement:
    """What one BGP session says about one anycast prefix, and why (edge.steering.anycast).

    ``prepend`` counts the extra copies of the local AS (the speaker adds the first one);
    ``med`` None sends no MED. Communities are text: ``"64500:100"``, ``"64500:1:2"``.
    """

    prefix: str
    session: str
    action: AnnounceAction
    med: int | None = None
    prepend: int = 0
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    reasons: tuple[Reason, ...] = ()
    tier: int = 0

    def content(self) -> tuple[Any, ...]:
        """What the peer sees: a withdrawn route has no attributes; ignores reasons."""
        if self.action == "withdraw":
            return ("withdraw",)
        return ("announce", self.med, self.prepend, self.communities, self.large_communities)

    def to_json(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "session": self.session, "action": self.action,
                "med": self.med, "prepend": self.prepend, "tier": self.tier,
                "communities": list(self.communities),
                "large_communities": list(self.large_communities),
                "reasons": [r.to_json() for r in self.reasons]}


@dataclass(frozen=True, slots=True)
class AnnouncementChange:
    key: AnnouncementKey
    before: Announcement | None
    after: Announcement | None

    def to_json(self) -> dict[str, Any]:
        return {"prefix": self.key[0], "session": self.key[1],
                "before": self.before.to_json() if self.before else None,
                "after": self.after.to_json() if self.after else None}


@dataclass(frozen=True, slots=True)
class AnswerChange:
    key: AnswerKey
    before: AnswerSet | None
    after: AnswerSet | None

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.key[0], "segment": self.key[1],
            "before": self.before.to_json() if self.before else None,
            "after": self.after.to_json() if self.after else None,
        }


@dataclass(frozen=True, slots=True)
class PlanDiff:
    changes: tuple[AnswerChange, ...]
    announcement_changes: tuple[AnnouncementChange, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.changes) or bool(self.announcement_changes)

    def to_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.changes] + \
            [c.to_json() for c in self.announcement_changes]


_NO_ANSWERS: Mapping[AnswerKey, AnswerSet] = MappingProxyType({})
_KEY = itemgetter(0)
_NO_ANNOUNCEMENTS: Mapping[AnnouncementKey, Announcement] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Plan:
    version: int = 0
    created_at: float = 0.0
    inputs_digest: str = ""
    answers: Mapping[AnswerKey, AnswerSet] = field(default_factory=lambda: _NO_ANSWERS)
    announcements: Mapping[AnnouncementKey, Announcement] = field(
        default_factory=lambda: _NO_ANNOUNCEMENTS)
    # the checksum once computed (a plan is immutable); not an input, not compared
    _checksum: list[str] = field(default_factory=list, init=False, compare=False, repr=False)

    def get(self, service: str, segment: str) -> AnswerSet | None:
        return self.answers.get((service, segment))

    def diff(self, newer: Plan) -> PlanDiff:
        """What changes in substance going from ``self`` to ``newer``."""
        keys = sorted(set(self.answers) | set(newer.answers))
        changes = []
        for key in keys:
            before, after = self.answers.get(key), newer.answers.get(key)
            if before is after is not None:
                continue  # the same object (an incremental plan shares what it kept)
            if before is None or after is None or before.content() != after.content():
                changes.append(AnswerChange(key, before, after))
        routes = []
        for rkey in sorted(set(self.announcements) | set(newer.announcements)):
            was, now = self.announcements.get(rkey), newer.announcements.get(rkey)
            if was is None or now is None or was.content() != now.content():
                routes.append(AnnouncementChange(rkey, was, now))
        return PlanDiff(tuple(changes), tuple(routes))

    def checksum(self) -> str:
        """Digest of the plan's substance: same answers => same checksum, whatever the version.

        Computed once per plan (and kept with it), each distinct content once: the copies
        of a group's answer set for its other segments share its ``answers`` tuple, so
        500,000 sets cost 30,000 reprs.
        """
        if self._checksum:
            return self._checksum[0]
        h = hashlib.sha256()
        memo: dict[tuple[int, int, int, bool], bytes] = {}
        for (service, segment), a in sorted(self.answers.items(), key=_KEY):
            mk = (id(a.answers), a.ttl, a.tier, a.fail_open)
            content = memo.get(mk)
            if content is None:
                content = memo[mk] = repr(a.content()).encode()
            h.update(f"{service}\x1f{segment}\x1f".encode())
            h.update(content)
            h.update(b"\n")
        if self.announcements:  # absent => the checksum of a DNS-only plan is unchanged
            h.update(repr([(k, self.announcements[k].content())
                           for k in sorted(self.announcements)]).encode())
        digest = h.hexdigest()[:16]
        self._checksum.append(digest)
        return digest

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version, "created_at": self.created_at,
            "inputs_digest": self.inputs_digest, "checksum": self.checksum(),
            "answers": [self.answers[k].to_json() for k in sorted(self.answers)],
        } | ({"announcements": [self.announcements[k].to_json()
                                for k in sorted(self.announcements)]}
             if self.announcements else {})


# --- a plan from its JSON form (Plan.to_json) ----------------------------------------------


RRTYPES: frozenset[str] = frozenset({"A", "AAAA", "CNAME"})


def rrtype(value: object) -> RRType:
    """``value`` as an answer's record type; ValueError when it is none of them."""
    if value not in RRTYPES:
        raise ValueError(f"not an answer record type: {value!r}")
    return value  # type: ignore[return-value]


def reason_from_json(d: Mapping[str, Any]) -> Reason:
    """The inverse of ``Reason.to_json``. Inputs are immutable values: a JSON list comes
    back as the tuple it was written from."""
    inputs = {str(k): _frozen(v) for k, v in dict(d.get("inputs") or {}).items()}
    return Reason(str(d["code"]), str(d["detail"]), MappingProxyType(inputs))


def _frozen(value: Any) -> Any:
    return tuple(map(_frozen, value)) if isinstance(value, list) else value


def answer_set_from_json(d: Mapping[str, Any]) -> AnswerSet:
    """The inverse of ``AnswerSet.to_json``."""
    return AnswerSet(
        service=str(d["service"]), segment=str(d["segment"]), ttl=int(d["ttl"]),
        tier=int(d["tier"]),
        answers=tuple(WeightedAnswer(rrtype(a["rrtype"]), str(a["value"]),
                                     float(a["weight"]), str(a["link"]), str(a["pool"]),
                                     int(a["tier"]))
                      for a in d["answers"]),
        reasons=tuple(reason_from_json(r) for r in d.get("reasons", ())),
        failing_over=bool(d.get("failing_over", False)),
        fail_open=bool(d.get("fail_open", False)),
        max_answers=int(d.get("max_answers", 0)))


def announcement_from_json(d: Mapping[str, Any]) -> Announcement:
    return Announcement(
        prefix=str(d["prefix"]), session=str(d["session"]), action=d["action"],
        med=d.get("med"), prepend=int(d.get("prepend", 0)),
        communities=tuple(d.get("communities", ())),
        large_communities=tuple(d.get("large_communities", ())),
        reasons=tuple(reason_from_json(r) for r in d.get("reasons", ())),
        tier=int(d.get("tier", 0)))


def plan_from_json(d: Mapping[str, Any]) -> Plan:
    """The inverse of ``Plan.to_json``: same substance, so the same checksum (which is
    recomputed, never read from the input). Raises KeyError, TypeError or ValueError on
    input that is not a plan."""
    answers = {(a.service, a.segment): a for a in map(answer_set_from_json, d["answers"])}
    routes = {(r.prefix, r.session): r
              for r in map(announcement_from_json, d.get("announcements", ()))}
    return Plan(version=int(d["version"]), created_at=float(d["created_at"]),
                inputs_digest=str(d.get("inputs_digest", "")),
                answers=MappingProxyType(answers), announcements=MappingProxyType(routes))
