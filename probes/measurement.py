"""Leaf types of the probe stage: what a probe produced and what the agent publishes.

Imports nothing from the project, so every stage may depend on it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

ProbeErrorKind = Literal[
    "timeout",
    "refused",
    "unreachable",
    "reset",
    "bad_status",
    "bad_answer",
    "bad_body",
    "rcode",
    "tls",
    "permission",
    "error",
]


class ProbeKind(enum.StrEnum):
    ICMP = "icmp"
    TCP = "tcp"
    HTTP = "http"
    DNS = "dns"


@dataclass(frozen=True, slots=True, order=True)
class PathKey:
    """One measured path: from ``node``, leaving over ``link``, toward ``target``."""

    node: str
    link: str
    target: str

    def __str__(self) -> str:
        return f"{self.node}/{self.link}/{self.target}"

    @property
    def order(self) -> tuple[str, str, str]:
        """The sort key: the same order as comparing keys, several times cheaper to sort by
        (the generated comparisons build two tuples per call)."""
        return (self.node, self.link, self.target)


@dataclass(frozen=True, slots=True)
class ProbeError:
    """Why a probe failed; travels with the data, not only in logs."""

    kind: ProbeErrorKind
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


_EMPTY: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Sample:
    """The outcome of one probe. ``rtt_s`` is set exactly when ``ok`` is true."""

    path: PathKey
    kind: ProbeKind
    at: float
    ok: bool
    rtt_s: float | None
    phases: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    error: ProbeError | None = None

    def __post_init__(self) -> None:
        if self.ok and self.rtt_s is None:
            raise ValueError("a successful sample needs rtt_s")
        if not self.ok and self.error is None:
            raise ValueError("a failed sample needs an error")


@dataclass(frozen=True, slots=True)
class Measurement:
    """Window statistics for one path, published once per probe interval.

    Times are in seconds. ``rtt_*`` are None when no probe in the window succeeded.
    ``jitter_s`` is the RFC 3550 inter-arrival estimator over the window's rtts.
    """

    path: PathKey
    kind: ProbeKind
    at: float
    window_s: float
    sent: int
    received: int
    loss: float
    rtt_min: float | None
    rtt_p50: float | None
    rtt_p95: float | None
    rtt_p99: float | None
    rtt_max: float | None
    rtt_mean: float | None
    jitter_s: float
    mean_abs_diff_s: float
    ewma_rtt: float | None
    last_error: ProbeError | None = None
    errors: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
