"""Probe kinds: one async function per kind, and the registry the agent dispatches on.

Every probe function takes ``(TargetSpec, ProbeContext)`` and returns an
:class:`~probes.kinds.base.Outcome`; every failure is an Outcome carrying a ProbeError, and
no exception escapes a probe except CancelledError. The agent owns the deadline, turns
outcomes into Samples and folds them into windows.
"""

from __future__ import annotations

from probes.kinds.base import Outcome, ProbeContext, ProbeFn
from probes.kinds.dns import probe_dns
from probes.kinds.http import make_http_session, probe_http
from probes.kinds.icmp import probe_icmp
from probes.kinds.tcp import probe_tcp
from probes.measurement import ProbeKind

PROBERS: dict[ProbeKind, ProbeFn] = {
    ProbeKind.ICMP: probe_icmp,
    ProbeKind.TCP: probe_tcp,
    ProbeKind.HTTP: probe_http,
    ProbeKind.DNS: probe_dns,
}

__all__ = ["PROBERS", "Outcome", "ProbeContext", "ProbeFn", "make_http_session"]
