"""What a probe function receives (ProbeContext) and returns (Outcome).

A probe returns an :class:`Outcome`, not a :class:`~probes.measurement.Sample`: the probe
only measures, while the agent owns the path identity (node, link, target), the wall clock
stamp and the deadline, and turns the outcome into a Sample with :meth:`Outcome.to_sample`.
This keeps probe functions free of agent concepts and trivially reusable (the lab, tests,
a one-shot ``edgesteer probe`` command).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import aiohttp

from probes.measurement import PathKey, ProbeError, ProbeErrorKind, ProbeKind, Sample
from probes.spec import LinkBinding, TargetSpec

if TYPE_CHECKING:
    from probes.kinds.icmp_engine import IcmpEngine

_NO_PHASES: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ProbeContext:
    """How to leave (``binding``), how long to try, and the link's HTTP session if any.

    ``http`` is owned by the caller (the agent keeps one ClientSession per link binding);
    when None the HTTP probe makes and closes a session of its own. Likewise ``icmp``: the
    agent's shared echo engine (one socket per link), or None for a socket of its own.
    """

    binding: LinkBinding
    timeout_s: float
    http: aiohttp.ClientSession | None = None
    icmp: IcmpEngine | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one probe: ``rtt_s`` (monotonic seconds) when ok, else ``error``."""

    ok: bool
    rtt_s: float | None
    phases: Mapping[str, float] = field(default_factory=lambda: _NO_PHASES)
    error: ProbeError | None = None

    @classmethod
    def success(cls, rtt_s: float, phases: Mapping[str, float] | None = None) -> Outcome:
        return cls(True, rtt_s, MappingProxyType(dict(phases)) if phases else _NO_PHASES)

    @classmethod
    def failure(
        cls, kind: ProbeErrorKind, detail: str, phases: Mapping[str, float] | None = None
    ) -> Outcome:
        return cls.failed(ProbeError(kind, detail), phases)

    @classmethod
    def failed(cls, error: ProbeError, phases: Mapping[str, float] | None = None) -> Outcome:
        return cls(False, None, MappingProxyType(dict(phases)) if phases else _NO_PHASES, error)

    def to_sample(self, path: PathKey, kind: ProbeKind, at: float) -> Sample:
        return Sample(path, kind, at, self.ok, self.rtt_s, self.phases, self.error)


ProbeFn = Callable[[TargetSpec, ProbeContext], Awaitable[Outcome]]
