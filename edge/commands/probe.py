"""``edgesteer probe``: one-shot probes of one kind toward some targets, fping/mtr style.

TARGET forms: icmp ``HOST``; tcp ``HOST:PORT``; http ``HOST[:PORT]`` or a URL
(``https://host:8443/path``); dns ``SERVER[:PORT]`` (or give ``--server`` and TARGET is the
query name unless ``--name`` says otherwise). Probes of different targets run at the same
time; each target gets ``--count`` probes started ``--interval`` apart.

Exit code: 0 when every target answered at least once, 1 when one did not, 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from edge.commands.common import UsageError, load_or_report
from edge.runtime import link_bindings
from probes.kinds import PROBERS, ProbeContext, make_http_session
from probes.kinds.icmp_engine import IcmpEngine
from probes.measurement import Measurement, PathKey, ProbeKind
from probes.schedule import run_probe
from probes.spec import LinkBinding, TargetSpec
from probes.window import Window

_DEFAULT_PORT = {ProbeKind.ICMP: 0, ProbeKind.TCP: 0, ProbeKind.HTTP: 80, ProbeKind.DNS: 53}


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "probe", help="probe targets once (fping/mtr-like summary)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="+", metavar="TARGET")
    p.add_argument("--kind", required=True, choices=[k.value for k in ProbeKind])
    p.add_argument("--link", metavar="NAME", help="leave over this link of --config")
    p.add_argument("--config", metavar="FILE", help="config that defines --link")
    p.add_argument("--source", metavar="ADDR", help="leave from this source address")
    p.add_argument("--count", type=int, default=5, metavar="N", help="probes per target (5)")
    p.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="seconds between probes of one target (1.0)")
    p.add_argument("--timeout", type=float, default=1.0, metavar="S",
                   help="timeout of each probe (1.0)")
    p.add_argument("--server", metavar="HOST:PORT", help="dns: the server to query")
    p.add_argument("--name", metavar="QNAME", help="dns: the name to query (default .)")
    p.add_argument("--qtype", default=None, metavar="TYPE", help="dns: query type (SOA)")
    p.add_argument("--json", action="store_true", help="one JSON object per target")
    p.set_defaults(run=run)


def split_host_port(text: str, default: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare v6 address."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise UsageError(f"{text!r}: no host")
    if not port:
        return host, default
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise UsageError(f"{text!r}: port must be 1..65535")
    return host, int(port)


def build_spec(kind: ProbeKind, target: str, args: argparse.Namespace) -> TargetSpec:
    """The TargetSpec one TARGET argument means for ``kind``; UsageError when it cannot."""
    base = TargetSpec(target, kind, "", 0, args.interval, args.timeout)
    if kind is ProbeKind.ICMP:
        return replace(base, host=target)
    if kind is ProbeKind.TCP:
        host, port = split_host_port(target, 0)
        if not port:
            raise UsageError(f"tcp target {target!r}: expected HOST:PORT")
        return replace(base, host=host, port=port)
    if kind is ProbeKind.HTTP:
        if "://" in target:
            url = urllib.parse.urlsplit(target)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise UsageError(f"http target {target!r}: expected http(s)://HOST[:PORT]/PATH")
            https = url.scheme == "https"
            port = url.port or (443 if https else 80)
            return replace(base, host=url.hostname, port=port,
                           scheme="https" if https else "http", path=url.path or "/")
        host, port = split_host_port(target, 80)
        return replace(base, host=host, port=port)
    server = args.server or target
    qname = args.name or (target if args.server and target != args.server else ".")
    host, port = split_host_port(server, 53)
    return replace(base, host=host, port=port, qname=qname, qtype=args.qtype or "SOA")


def pick_binding(args: argparse.Namespace) -> LinkBinding:
    if args.link or args.config:
        if not (args.link and args.config):
            raise UsageError("--link and --config go together")
        if args.source:
            raise UsageError("give --link/--config or --source, not both")
        config = load_or_report(args.config, "probe")
        if config is None:
            raise UsageError(f"{args.config} is invalid")
        for binding in link_bindings(config):
            if binding.link == args.link:
                return binding
        names = ", ".join(lk.name for lk in config.links)
        raise UsageError(f"--link {args.link!r} is not a link of {args.config} ({names})")
    if args.source:
        return LinkBinding("source", source=args.source)
    return LinkBinding("default")


async def probe_targets(specs: Sequence[TargetSpec], binding: LinkBinding, count: int,
                        interval_s: float) -> list[Measurement]:
    """``count`` probes per spec, ``interval_s`` apart, all specs at once; one summary each."""
    engine = IcmpEngine()
    session = make_http_session(binding) if any(
        s.kind is ProbeKind.HTTP for s in specs) else None
    try:
        return list(await asyncio.gather(
            *(_one_target(spec, binding, count, interval_s, engine, session)
              for spec in specs)))
    finally:
        engine.close()
        if session is not None:
            await session.close()


async def _one_target(spec: TargetSpec, binding: LinkBinding, count: int, interval_s: float,
                      engine: IcmpEngine, session: Any) -> Measurement:
    window = Window(count)
    ctx = ProbeContext(binding, spec.timeout_s, session, engine)
    key = PathKey("cli", binding.link, spec.name)

    async def one(i: int) -> None:
        await asyncio.sleep(i * interval_s)
        at = time.time()
        outcome = await run_probe(PROBERS[spec.kind], spec, ctx)
        window.add(outcome.to_sample(key, spec.kind, at))

    await asyncio.gather(*(one(i) for i in range(count)))
    return window.measurement(key, spec.kind, time.time())


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000.0, 3)


def to_json(m: Measurement) -> dict[str, Any]:
    return {
        "target": m.path.target, "kind": str(m.kind), "sent": m.sent, "received": m.received,
        "loss": m.loss,
        "rtt_ms": {"min": _ms(m.rtt_min), "p50": _ms(m.rtt_p50), "p95": _ms(m.rtt_p95),
                   "p99": _ms(m.rtt_p99), "max": _ms(m.rtt_max), "mean": _ms(m.rtt_mean)},
        "jitter_ms": _ms(m.jitter_s), "errors": dict(m.errors),
    }


def to_line(m: Measurement, width: int) -> str:
    """fping -c style: ``target : xmt/rcv/%loss = 5/5/0%, min/avg/max = ...``."""
    head = (f"{m.path.target:<{width}} : xmt/rcv/%loss = {m.sent}/{m.received}/"
            f"{round(m.loss * 100):d}%")
    if m.received:
        head += (f", min/p50/avg/p95/max = {_ms(m.rtt_min):.3f}/{_ms(m.rtt_p50):.3f}/"
                 f"{_ms(m.rtt_mean):.3f}/{_ms(m.rtt_p95):.3f}/{_ms(m.rtt_max):.3f} ms, "
                 f"jitter {_ms(m.jitter_s):.3f} ms")
    if m.errors:
        head += "  [" + ", ".join(f"{k} {n}" for k, n in sorted(m.errors.items())) + "]"
        if m.last_error is not None:
            head += f" last: {m.last_error}"
    return head


def run(args: argparse.Namespace) -> int:
    kind = ProbeKind(args.kind)
    try:
        if args.count < 1:
            raise UsageError("--count must be >= 1")
        if not args.interval > 0 or not args.timeout > 0:
            raise UsageError("--interval and --timeout must be > 0")
        binding = pick_binding(args)
        specs = [build_spec(kind, t, args) for t in args.targets]
    except UsageError as exc:
        print(f"edgesteer probe: {exc}", file=sys.stderr)
        return 2
    results = asyncio.run(probe_targets(specs, binding, args.count, args.interval))
    width = max(len(s.name) for s in specs)
    for m in results:
        print(json.dumps(to_json(m)) if args.json else to_line(m, width))
    return 0 if all(m.received for m in results) else 1
