"""``edgesteer lab``: emulated links, real probes, the engine and the built-in DNS server.

The lab loads its embedded config (or ``--config``), starts one userspace responder per
target that delays / drops / jitters per link (keyed on the probe's source address), runs
the node runtime against them, plays the scenario's timeline, and measures how long the
DNS answers took to move away from an impaired link and to come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TextIO

from edge.config.loader import ConfigError, ConfigInvalid, load_config, parse_config
from edge.config.schema import Config, Link
from edge.health.tracker import Transition
from edge.lab.display import CLEAR, describe_answers, screen
from edge.lab.responders import DnsResponder, HttpResponder, ImpairmentTable, TcpResponder
from edge.lab.scenario import LabEvent, Scenario, load_scenario
from edge.runtime import NodeRuntime, PlanEvent
from geo.segment import DEFAULT_SEGMENT
from probes.measurement import ProbeKind
from probes.spec import TargetSpec

log = logging.getLogger("edgesteer.lab")

Responder = DnsResponder | HttpResponder | TcpResponder


@dataclass(frozen=True, slots=True)
class LabOptions:
    scenario: str | None = None
    config: str | None = None
    duration_s: float | None = None
    headless: bool = False
    listen: tuple[tuple[str, int], ...] | None = None
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class AnswerChange:
    t: float  # seconds since the lab started
    plan_version: int
    values: frozenset[str]


@dataclass(slots=True)
class LabResult:
    scenario: str
    duration_s: float
    dns: tuple[str, int]
    service: str
    watched_link: str | None
    onset_t: float | None
    restored_t: float | None
    detected_after_s: float | None
    recovered_after_s: float | None
    detect_bound_s: float
    recover_bound_s: float
    changes: list[AnswerChange] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    @property
    def answer_changes(self) -> int:
        """How many times the watched answer set changed after the first plan."""
        return max(0, len(self.changes) - 1)

    @property
    def passed(self) -> bool:
        if self.onset_t is None:
            return True
        detected = (self.detected_after_s is not None
                    and self.detected_after_s <= self.detect_bound_s)
        if self.restored_t is None:
            return detected
        recovered = (self.recovered_after_s is not None
                     and self.recovered_after_s <= self.recover_bound_s)
        return detected and recovered

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "duration_s": round(self.duration_s, 3),
            "dns": {"host": self.dns[0], "port": self.dns[1]},
            "service": self.service,
            "watched_link": self.watched_link,
            "onset_t": self.onset_t,
            "restored_t": self.restored_t,
            "detected_after_s": _r(self.detected_after_s),
            "recovered_after_s": _r(self.recovered_after_s),
            "bounds": {"detect_s": self.detect_bound_s, "recover_s": self.recover_bound_s},
            "answer_changes": self.answer_changes,
            "answers": [{"t": round(c.t, 3), "plan_version": c.plan_version,
                         "values": sorted(c.values)} for c in self.changes],
            "passed": self.passed,
        }

    def summary_text(self) -> str:
        lines = [f"Summary of scenario {self.scenario} ({self.duration_s:.0f} s)"]
        if self.onset_t is None:
            lines.append("  no impairment in this scenario")
        else:
            lines.append(f"  impairment of {self.watched_link} at t={self.onset_t:.1f}s")
            lines.append("  failover: " + _verdict(self.detected_after_s, self.detect_bound_s,
                                                   "DNS answers moved away"))
            if self.restored_t is not None:
                lines.append(f"  restoration at t={self.restored_t:.1f}s")
                lines.append("  recovery: " + _verdict(self.recovered_after_s,
                                                       self.recover_bound_s,
                                                       "DNS answers came back"))
        lines.append(f"  answer set of {self.service} (default segment) changed "
                     f"{self.answer_changes} time(s)")
        lines.append("  result: " + ("PASS" if self.passed else "FAIL"))
        return "\n".join(lines)


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _verdict(after: float | None, bound: float, what: str) -> str:
    if after is None:
        return f"NOT observed (bound {bound:g} s)"
    ok = "within" if after <= bound else "OVER"
    return f"{what} after {after:.1f} s ({ok} the {bound:g} s bound)"


def load_lab_config(path: str | None) -> Config:
    if path is not None:
        config = load_config(path)
    else:
        text = resources.files("edge.lab").joinpath("lab.yaml").read_text()
        config = parse_config(text, "<builtin>/edge/lab/lab.yaml")
    missing = [ConfigError(config.source, None, f"links[{i}].source",
                           "the lab needs a loopback source address per link "
                           "(responders tell links apart by it)", "e.g. source: 127.0.1.1")
               for i, lk in enumerate(config.links) if not lk.source]
    if missing:
        raise ConfigInvalid(missing)
    return config


class Lab:
    def __init__(self, config: Config, scenario: Scenario, options: LabOptions,
                 out: TextIO) -> None:
        self.config = config
        self.scenario = scenario
        self.options = options
        self.out = out
        self.duration = options.duration_s or scenario.duration_s
        self.table = ImpairmentTable(seed=options.seed)
        self.sources = {lk.name: lk.source or "" for lk in config.links}
        self.service = config.services[0].name
        onset = scenario.onset
        self.watched: Link | None = config.link(onset.link) if onset else None
        self.events: list[str] = []
        self.changes: list[AnswerChange] = []
        self.t0 = time.monotonic()
        self.runtime: NodeRuntime | None = None
        self.live = not options.headless and out.isatty()

    def t(self) -> float:
        return time.monotonic() - self.t0

    def note(self, text: str) -> None:
        line = f"t={self.t():6.2f}s {time.strftime('%H:%M:%S')} {text}"
        self.events.append(line)
        log.info(text)
        if not self.live:
            print(line, file=self.out, flush=True)

    # listeners -----------------------------------------------------------------------
    def on_transition(self, tr: Transition) -> None:
        self.note(f"health {tr.path}: {tr.old} -> {tr.new} ({tr.reason})")

    def on_plan(self, ev: PlanEvent) -> None:
        if ev.error is not None:
            self.note(f"plan v{ev.plan.version} REFUSED: {ev.error}")
            return
        for change in ev.diff.changes:
            if change.after is None:
                continue
            reasons = "; ".join(r.detail for r in change.after.reasons[-2:])
            self.note(f"plan v{ev.plan.version} {change.key[0]} [{change.key[1]}] -> "
                      f"{describe_answers(change.after)} — {reasons}")
        for rc in ev.diff.announcement_changes:
            if rc.after is not None:
                why = "; ".join(r.detail for r in rc.after.reasons[-1:])
                self.note(f"plan v{ev.plan.version} anycast {rc.key[0]} via {rc.key[1]}: "
                          f"{rc.after.action} prepend {rc.after.prepend} — {why}")
        aset = ev.plan.get(self.service, DEFAULT_SEGMENT)
        if aset is not None:
            values = aset.values("A")
            if not self.changes or self.changes[-1].values != values:
                self.changes.append(AnswerChange(self.t(), ev.plan.version, values))

    # run -----------------------------------------------------------------------------
    async def start_responders(self) -> tuple[list[Responder], tuple[TargetSpec, ...]]:
        responders: list[Responder] = []
        targets: list[TargetSpec] = []
        for target in self.config.targets:
            responder: Responder
            if target.kind == ProbeKind.DNS:
                responder = DnsResponder(self.table)
            elif target.kind == ProbeKind.HTTP:
                responder = HttpResponder(self.table)
            elif target.kind == ProbeKind.TCP:
                responder = TcpResponder(self.table)
            else:
                raise ConfigInvalid([ConfigError(self.config.source, None, "targets",
                                                 f"the lab cannot emulate {target.kind} "
                                                 f"targets ({target.name})",
                                                 "use dns, http or tcp targets")])
            await responder.start()
            responders.append(responder)
            targets.append(dataclasses.replace(target, host="127.0.0.1", port=responder.port))
        return responders, tuple(targets)

    def apply_event(self, ev: LabEvent) -> None:
        source = self.sources[ev.link]
        imp = ev.impairment or self.scenario.baseline[ev.link]
        self.table.set(source, imp)
        what = "restored to baseline" if ev.is_restore else "impaired"
        self.note(f"scenario: {ev.link} {what}: delay {imp.delay_ms:g} ms +- "
                  f"{imp.jitter_ms:g} ms, loss {imp.loss * 100:g}%"
                  + (f" — {ev.note}" if ev.note else ""))

    async def timeline(self) -> None:
        for ev in self.scenario.events:
            if ev.at > self.duration:
                break
            await asyncio.sleep(max(0.0, ev.at - self.t()))
            self.apply_event(ev)
        await asyncio.sleep(max(0.0, self.duration - self.t()))

    def dig_commands(self) -> list[str]:
        assert self.runtime is not None
        host, port = self.runtime.dns.bound[0]
        base = f"dig @{host} -p {port} {self.service}"
        return [f"{base} A", f"{base} A +subnet=198.18.0.0/24"]

    async def display(self) -> None:
        assert self.runtime is not None
        while True:
            if self.live:
                self.out.write(CLEAR + screen(self.config, self.scenario.name, self.t(),
                                              self.duration, self.runtime.engine.tracker.snapshot,
                                              self.runtime.engine.current, self.events,
                                              self.dig_commands(),
                                              shutil.get_terminal_size().columns) + "\n")
                self.out.flush()
                await asyncio.sleep(0.5)
            else:
                await asyncio.sleep(5.0)
                snap = self.runtime.engine.tracker.snapshot
                states = ", ".join(f"{name}={lh.state}" for name, lh in sorted(snap.links.items()))
                print(f"t={self.t():6.2f}s status: {states}", file=self.out, flush=True)

    async def start_runtime(self, config: Config) -> NodeRuntime:
        """Start the node runtime. When the default DNS port is taken (mDNS daemons often
        hold 5353) and no --listen was given, fall back to a free port and say so."""
        runtime = NodeRuntime(config, on_plan=self.on_plan, on_transition=self.on_transition,
                              listen=self.options.listen)
        try:
            await runtime.start()
            return runtime
        except OSError as exc:
            await runtime.aclose()
            if self.options.listen is not None or exc.errno != errno.EADDRINUSE:
                raise
        wanted = ", ".join(f"{h}:{p}" for h, p in config.dns.listen)
        fallback = tuple((host, 0) for host, _ in config.dns.listen)
        runtime = NodeRuntime(config, on_plan=self.on_plan, on_transition=self.on_transition,
                              listen=fallback)
        await runtime.start()
        self.note(f"DNS port {wanted} is in use; serving on a free port instead "
                  f"(choose one with --listen)")
        return runtime

    async def run(self) -> LabResult:
        for link, imp in self.scenario.baseline.items():
            self.table.set(self.sources[link], imp)
        responders, targets = await self.start_responders()
        config = dataclasses.replace(self.config, targets=targets)
        background: list[asyncio.Future[None]] = []
        dns_bound: tuple[str, int] = ("", 0)
        try:
            self.t0 = time.monotonic()
            self.runtime = await self.start_runtime(config)
            dns_bound = self.runtime.dns.bound[0]
            self.note(f"lab started: scenario {self.scenario.name}, {self.duration:g} s; "
                      f"DNS on {dns_bound[0]}:{dns_bound[1]}")
            for cmd in self.dig_commands():
                self.note(f"query it: {cmd}")
            display = asyncio.ensure_future(self.display())
            timeline = asyncio.ensure_future(self.timeline())
            failure = asyncio.ensure_future(self.runtime.wait())
            background = [display, timeline, failure]
            done, _ = await asyncio.wait({timeline, failure},
                                         return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                finished.result()  # a component that died fails the lab with its error
        finally:
            for job in background:
                job.cancel()
            for job in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await job
            if self.runtime is not None:
                await self.runtime.aclose()
            for r in responders:
                await r.aclose()
        return self.result(dns_bound)

    def result(self, dns: tuple[str, int]) -> LabResult:
        onset, restored = self.scenario.onset, self.scenario.restoration
        if onset is not None and onset.at > self.duration:
            onset = None
        if restored is not None and restored.at > self.duration:
            restored = None
        addrs = frozenset(self.watched.answers_v4) if self.watched else frozenset()
        detected = recovered = None
        if onset is not None:
            moved = next((c for c in self.changes if c.t >= onset.at and not c.values & addrs),
                         None)
            if moved is not None:
                detected = moved.t - onset.at
        if restored is not None:
            back = next((c for c in self.changes if c.t >= restored.at and c.values & addrs),
                        None)
            if back is not None:
                recovered = back.t - restored.at
        return LabResult(
            scenario=self.scenario.name, duration_s=self.duration, dns=dns,
            service=self.service, watched_link=self.watched.name if self.watched else None,
            onset_t=onset.at if onset else None, restored_t=restored.at if restored else None,
            detected_after_s=detected, recovered_after_s=recovered,
            detect_bound_s=self.scenario.detect_bound_s,
            recover_bound_s=self.scenario.recover_bound_s,
            changes=list(self.changes), log=list(self.events))


async def run_lab(options: LabOptions, out: TextIO = sys.stdout) -> LabResult:
    """Run the lab to its end and return what happened. Raises ConfigInvalid on bad input."""
    config = load_lab_config(options.config)
    scenario = load_scenario(options.scenario, {lk.name for lk in config.links})
    return await Lab(config, scenario, options, out).run()


def parse_listen(values: Sequence[str]) -> tuple[tuple[str, int], ...]:
    """``HOST:PORT`` / ``[V6]:PORT`` strings to tuples; raises ValueError naming the bad one."""
    out: list[tuple[str, int]] = []
    for v in values:
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
            raise ValueError(f"--listen {v!r}: expected HOST:PORT, e.g. 127.0.0.1:5353")
        out.append((host.strip("[]"), int(port)))
    return tuple(out)
