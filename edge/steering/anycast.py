"""The anycast planner: a pure function of (config, health snapshot) -> announcements.

For every anycast prefix and every BGP session that may announce it (a session is named
after its link), the announcement is chosen from the link's state in the snapshot, which
already carries the health layer's rise/fall counts and hold-down:

* UP (or UNKNOWN: no data is not failure): announced; the tier's prepends
  (``anycast.prepend_by_tier``; the link's priority is its tier), MED ``anycast.med``.
  The preferred tier (1) is announced clean by default.
* DEGRADED or FALLING: still announced, but less attractive: ``degraded_prepend`` more
  prepends, MED ``degraded_med`` and ``degraded_communities``. A link is de-preferred before
  it is ever withdrawn: on its way down it is FALLING first.
* DOWN, or RISING (still in hold-down / rise count): withdrawn.
* a drained link (weight 0): withdrawn, or with ``drained_action: prepend`` announced at the
  worst preference.

Never blackhole the site: when every session of a prefix would be withdrawn because no link
is healthy (the site is unhealthy), the prefix is withdrawn everywhere only when
``withdraw_when_site_unhealthy`` is on and another site (``announced_by``) announces it.
Otherwise it stays announced on every session that is not drained, at the worst preference
(fail-open, as the DNS planner serves every endpoint when all are down). Draining every
session is an operator's decision and is honoured.

Communities: ``anycast.communities`` + the prefix's + the session's (``bgp.communities``),
in that order, without duplicates; the same for large communities.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from edge.config.schema import AnycastPrefix, AnycastSettings, Config, Link
from edge.health.state import HealthSnapshot, HealthState
from edge.plan import Announcement, AnnouncementKey, Plan, Reason

S = HealthState
_DEPREFERRED = frozenset({S.DEGRADED, S.FALLING})
_WITHDRAWN = frozenset({S.DOWN, S.RISING})


def _reason(code: str, detail: str, **inputs: object) -> Reason:
    return Reason(code, detail, MappingProxyType(inputs))


def _unique(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c for g in groups for c in g))


def tier_prepend(settings: AnycastSettings, tier: int) -> int:
    table = settings.prepend_by_tier or (0,)
    return table[min(max(tier, 1), len(table)) - 1]


def _session(settings: AnycastSettings, prefix: AnycastPrefix, link: Link,
             state: HealthState) -> Announcement:
    """The announcement of one session from its link alone (no whole-prefix rules yet)."""
    assert link.bgp is not None
    tier = link.priority
    prepend = tier_prepend(settings, tier)
    communities = _unique(settings.communities, prefix.communities, link.bgp.communities)
    large = _unique(settings.large_communities, prefix.large_communities,
                    link.bgp.large_communities)
    base = Announcement(prefix.prefix, link.name, "announce", settings.med, prepend,
                        communities, large, tier=tier)
    tier_why = _reason("bgp.tier", f"tier {tier}: {prepend} prepend(s)"
                       + (" (preferred, clean)" if prepend == 0 else " (backup)"),
                       tier=tier, prepend=prepend)
    if link.weight <= 0:
        if settings.drained_action == "prepend":
            return _worst(settings, base, (tier_why, _reason(
                "bgp.drained", f"link {link.name} is drained (weight 0): announced at the "
                "worst preference (drained_action: prepend)", link=link.name)))
        return dataclasses.replace(base, action="withdraw", reasons=(_reason(
            "bgp.drained", f"link {link.name} is drained (weight 0): withdrawn",
            link=link.name),))
    if state in _WITHDRAWN:
        why = "in hold-down / not yet risen" if state is S.RISING else "hard down"
        return dataclasses.replace(base, action="withdraw", reasons=(_reason(
            "bgp.withdraw", f"link {link.name} is {state} ({why}): withdrawn",
            link=link.name, state=str(state)),))
    if state in _DEPREFERRED:
        return _worst(settings, base, (tier_why, _reason(
            "bgp.degraded", f"link {link.name} is {state}: +{settings.degraded_prepend} "
            f"prepend(s), MED {settings.degraded_med}", link=link.name, state=str(state),
            prepend=settings.degraded_prepend, med=settings.degraded_med)))
    reasons = [tier_why]
    if state is S.UNKNOWN:
        reasons.append(_reason("bgp.unknown", f"link {link.name} has no health data: "
                               "announced (no data is not failure)", link=link.name))
    else:
        reasons.append(_reason("bgp.announce", f"link {link.name} is {state}: announced",
                               link=link.name, state=str(state)))
    return dataclasses.replace(base, reasons=tuple(reasons))


def _worst(settings: AnycastSettings, a: Announcement,
           reasons: tuple[Reason, ...]) -> Announcement:
    """``a`` de-preferred: degraded prepends, MED and communities."""
    return dataclasses.replace(
        a, action="announce", prepend=a.prepend + settings.degraded_prepend,
        med=settings.degraded_med if settings.degraded_med is not None else a.med,
        communities=_unique(a.communities, settings.degraded_communities), reasons=reasons)


def prefix_announcements(config: Config, prefix: AnycastPrefix,
                         snapshot: HealthSnapshot) -> tuple[Announcement, ...]:
    """The announcements of one prefix on each of its sessions (module docstring)."""
    settings = config.anycast
    links = [config.link(name) for name in prefix.sessions]
    links = [lk for lk in links if lk.bgp is not None]
    out = [_session(settings, prefix, lk, snapshot.link_state(lk.name)) for lk in links]
    if not out or any(a.action == "announce" for a in out):
        return tuple(out)
    live = [lk for lk in links if lk.weight > 0]
    if not live:
        why = _reason("bgp.drained_everywhere", f"every session of {prefix.prefix} is "
                      "drained: withdrawn everywhere (operator's decision)",
                      prefix=prefix.prefix)
        return tuple(dataclasses.replace(a, reasons=(*a.reasons, why)) for a in out)
    others = tuple(s for s in prefix.announced_by if s != config.node.site)
    if settings.withdraw_when_site_unhealthy and others:
        why = _reason("bgp.site_unhealthy", f"no link of site {config.node.site} is "
                      f"healthy and {', '.join(others)} announce(s) {prefix.prefix}: "
                      "withdrawn everywhere", site=config.node.site, others=others)
        return tuple(dataclasses.replace(a, reasons=(*a.reasons, why)) for a in out)
    cause = ("withdraw_when_site_unhealthy is off" if not settings.withdraw_when_site_unhealthy
             else "no other site announces it")
    fail_open = _reason("bgp.fail_open", f"every session of {prefix.prefix} would be "
                        f"withdrawn and {cause}: announced at the worst preference so the "
                        "site is never blackholed", prefix=prefix.prefix)
    by_name = {a.session: a for a in out}
    for lk in live:
        a = by_name[lk.name]
        tier = tier_prepend(settings, a.tier)
        by_name[lk.name] = _worst(settings, dataclasses.replace(a, prepend=tier),
                                  (*a.reasons, fail_open))
    return tuple(by_name[lk.name] for lk in links)


def plan_anycast(config: Config,
                 snapshot: HealthSnapshot) -> Mapping[AnnouncementKey, Announcement]:
    """Every (prefix, session) announcement of ``config`` under ``snapshot``. Pure."""
    out: dict[AnnouncementKey, Announcement] = {}
    for prefix in config.anycast.prefixes:
        for a in prefix_announcements(config, prefix, snapshot):
            out[(a.prefix, a.session)] = a
    return MappingProxyType(out)


def with_anycast(plan: Plan, config: Config, snapshot: HealthSnapshot) -> Plan:
    """``plan`` with its anycast part computed from the same inputs."""
    return dataclasses.replace(plan, announcements=plan_anycast(config, snapshot))


def _line(a: Announcement) -> str:
    if a.action == "withdraw":
        return f"{a.prefix:<20} via {a.session:<12} WITHDRAW"
    attrs = [f"prepend {a.prepend}", f"med {a.med if a.med is not None else '-'}"]
    if a.communities:
        attrs.append("communities " + " ".join(a.communities))
    if a.large_communities:
        attrs.append("large " + " ".join(a.large_communities))
    return f"{a.prefix:<20} via {a.session:<12} announce, tier {a.tier}, " + ", ".join(attrs)


def explain_announcements(announcements: Mapping[AnnouncementKey, Announcement], *,
                          reasons: bool = True) -> str:
    """Readable text of a plan's anycast part, with the reasons each entry carries."""
    if not announcements:
        return "anycast: no prefixes"
    lines = [f"anycast ({len(announcements)} prefix/session entries):"]
    for key in sorted(announcements):
        a = announcements[key]
        lines.append(f"  {_line(a)}")
        if reasons:
            lines += [f"      - [{r.code}] {r.detail}" for r in a.reasons]
    return "\n".join(lines)


__all__ = ["announcement_from_json", "explain_announcements", "plan_anycast",
           "prefix_announcements", "tier_prepend",
           "with_anycast"]


def announcement_from_json(obj: Mapping[str, Any]) -> Announcement:
    """The inverse of ``Announcement.to_json`` (for persisted plans)."""
    action = obj["action"]
    if action not in ("announce", "withdraw"):
        raise ValueError(f"unknown announcement action {action!r}")
    med = obj.get("med")
    return Announcement(
        prefix=str(obj["prefix"]), session=str(obj["session"]), action=action,
        med=None if med is None else int(med), prepend=int(obj.get("prepend", 0)),
        communities=tuple(str(c) for c in obj.get("communities", ())),
        large_communities=tuple(str(c) for c in obj.get("large_communities", ())),
        reasons=tuple(Reason(str(r["code"]), str(r["detail"]),
                             MappingProxyType(dict(r.get("inputs", {}))))
                      for r in obj.get("reasons", ())),
        tier=int(obj.get("tier", 0)))
