"""Prometheus metrics of the steering engine (and of its anycast applier), read at scrape time.

What an SRE asks of a running engine: which state is each link in and why (the window
figures behind it), which plan is in force, how many plans were applied or refused by the
guard, which backends are behind the plan (their last apply failed: they keep their last
state and the engine retries), and for anycast: which route is announced on which session
and whether each BGP speaker runs. Nothing here is on a hot path: the collector reads the
engine's current objects when ``/metrics`` is scraped (``edgesteer run --metrics``,
``edgesteer steer --metrics``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge.health.state import HealthSnapshot, HealthState
from edge.health.tracker import HealthTracker
from edge.plan import Announcement, AnnouncementKey, Plan


class EngineView(Protocol):
    """What the collector reads of ``edge.runtime.Engine``."""

    @property
    def snapshot(self) -> HealthSnapshot: ...

    @property
    def current(self) -> Plan | None: ...

    @property
    def plans_applied(self) -> int: ...

    @property
    def plans_refused(self) -> int: ...

    @property
    def backend_names(self) -> tuple[str, ...]: ...

    @property
    def backends_behind(self) -> frozenset[str]: ...

    @property
    def tracker(self) -> HealthTracker: ...

    @property
    def state_saves_failed(self) -> int: ...

    @property
    def state_saved_at(self) -> float: ...


class AnycastView(Protocol):
    """What the collector reads of ``edge.anycast.applier.AnycastApplier``."""

    @property
    def applied(self) -> Mapping[AnnouncementKey, Announcement]: ...

    @property
    def drained(self) -> bool: ...

    @property
    def speaker_names(self) -> tuple[str, ...]: ...

    @property
    def problems(self) -> Mapping[str, str]: ...


_NAN = float("nan")


class EngineCollector(Collector):
    def __init__(self, engine: EngineView, anycast: AnycastView | None = None) -> None:
        self._engine = engine
        self._anycast = anycast

    def collect(self) -> Iterator[Metric]:
        engine = self._engine
        snap = engine.snapshot
        state = GaugeMetricFamily("edgesteer_link_state",
                                  "1 for the state each link is in (0 for the others)",
                                  labels=["link", "state"])
        loss = GaugeMetricFamily("edgesteer_link_loss_ratio",
                                 "Loss ratio behind the link's state (0..1)", labels=["link"])
        rtt = GaugeMetricFamily("edgesteer_link_rtt_p95_seconds",
                                "p95 rtt behind the link's state", labels=["link"])
        jitter = GaugeMetricFamily("edgesteer_link_jitter_seconds",
                                   "Jitter behind the link's state", labels=["link"])
        since = GaugeMetricFamily("edgesteer_link_state_since_seconds",
                                  "Unix time the link entered its state", labels=["link"])
        for name in sorted(snap.links):
            lh = snap.links[name]
            for st in HealthState:
                state.add_metric([name, str(st)], 1.0 if lh.state is st else 0.0)
            q = lh.quality
            loss.add_metric([name], q.loss)
            rtt.add_metric([name], q.rtt_p95 if q.rtt_p95 is not None else _NAN)
            jitter.add_metric([name], q.jitter_s)
            since.add_metric([name], lh.since)
        yield from (state, loss, rtt, jitter, since)
        yield GaugeMetricFamily("edgesteer_health_snapshot_version",
                                "Version of the health snapshot (moves on every link change)",
                                value=snap.version)
        yield CounterMetricFamily("edgesteer_health_measurements",
                                  "Measurements the health tracker has read (stalls when no "
                                  "probe data comes)", value=engine.tracker.measurements)
        paths = GaugeMetricFamily("edgesteer_health_paths", "Paths in each state, all links",
                                  labels=["state"])
        counted = engine.tracker.path_states()
        for st in HealthState:
            paths.add_metric([str(st)], counted.get(st, 0))
        yield paths
        yield CounterMetricFamily("edgesteer_state_saves_failed",
                                  "Engine state file writes that failed (guard.state_dir; the "
                                  "plan in force is served all the same)",
                                  value=engine.state_saves_failed)
        yield GaugeMetricFamily("edgesteer_state_saved_timestamp_seconds",
                                "Unix time the engine state file was last written (0: never "
                                "or no guard.state_dir)", value=engine.state_saved_at)
        plan = engine.current
        yield GaugeMetricFamily("edgesteer_plan_version", "Version of the plan in force "
                                "(0: none yet)", value=plan.version if plan else 0)
        yield GaugeMetricFamily("edgesteer_plan_answer_sets", "Answer sets of the plan in force",
                                value=len(plan.answers) if plan else 0)
        yield CounterMetricFamily("edgesteer_plans_applied", "Plans applied",
                                  value=engine.plans_applied)
        yield CounterMetricFamily("edgesteer_plans_refused",
                                  "Plans refused by the guard (the last good plan stays)",
                                  value=engine.plans_refused)
        behind = GaugeMetricFamily("edgesteer_backend_behind",
                                   "1 while a backend's last apply failed (it keeps its "
                                   "last state; the engine retries)", labels=["backend"])
        for name in engine.backend_names:
            behind.add_metric([name], 1.0 if name in engine.backends_behind else 0.0)
        yield behind
        if self._anycast is not None:
            yield from self._anycast_metrics(self._anycast)

    @staticmethod
    def _anycast_metrics(anycast: AnycastView) -> Iterator[Metric]:
        route = GaugeMetricFamily("edgesteer_anycast_route_announced",
                                  "1 while the prefix is announced on the session, 0 when "
                                  "withdrawn", labels=["prefix", "session"])
        for (prefix, session), a in sorted(anycast.applied.items()):
            route.add_metric([prefix, session], 1.0 if a.action == "announce" else 0.0)
        yield route
        up = GaugeMetricFamily("edgesteer_anycast_speaker_up",
                               "1 while the BGP speaker runs (at the last check)",
                               labels=["speaker"])
        for name in anycast.speaker_names:
            up.add_metric([name], 0.0 if name in anycast.problems else 1.0)
        yield up
        yield GaugeMetricFamily("edgesteer_anycast_drained",
                                "1 while the node is drained (every route withdrawn)",
                                value=1.0 if anycast.drained else 0.0)
