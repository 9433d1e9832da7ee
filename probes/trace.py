"""Probe traces: JSON lines of raw samples or of Measurements, for recording and replay.

One JSON object per line; blank lines and lines starting with ``#`` are skipped. The
``"type"`` key says what a line holds; a line without it is a sample.

Sample (``"type": "sample"``)::

    {"type": "sample", "t": 1700000000.25, "node": "hk-1", "link": "cn2",
     "target": "pop", "kind": "tcp", "ok": true, "rtt_s": 0.038, "error": null}

``t`` is wall time (``Sample.at``), ``rtt_s`` is set exactly when ``ok`` is true, and a
failed sample carries ``"error": {"kind": "timeout", "detail": "..."}`` (``kind`` one of
``probes.measurement.ProbeErrorKind``). Optional ``"phases": {"connect": 0.01, ...}``.

Measurement (``"type": "measurement"``): ``t`` (``Measurement.at``), node, link, target,
kind, then the Measurement's own fields by name (``window_s``, ``sent``, ``received``,
``loss``, ``rtt_min`` ... ``rtt_mean`` (null when no reply), ``jitter_s``,
``mean_abs_diff_s``, ``ewma_rtt``, ``last_error`` (null or an error object as above),
``errors`` (error kind -> count)).

:func:`decode_line` raises :class:`TraceError` naming the line number and the key for
anything else; it never raises another exception type on any input text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, get_args

from probes.measurement import (
    Measurement,
    PathKey,
    ProbeError,
    ProbeErrorKind,
    ProbeKind,
    Sample,
)

Record = Sample | Measurement

_ERROR_KINDS: frozenset[str] = frozenset(get_args(ProbeErrorKind))
_OPTIONAL_RTTS = ("rtt_min", "rtt_p50", "rtt_p95", "rtt_p99", "rtt_max", "rtt_mean",
                  "ewma_rtt")


class TraceError(ValueError):
    """A trace line that is not a valid record; ``line`` is 1-based."""

    def __init__(self, line: int, message: str, source: str = "") -> None:
        where = f"{source}:{line}" if source else f"line {line}"
        super().__init__(f"{where}: {message}")
        self.line = line
        self.message = message


# --- encode ------------------------------------------------------------------------------


def _error_json(e: ProbeError | None) -> dict[str, str] | None:
    return None if e is None else {"kind": e.kind, "detail": e.detail}


def sample_to_json(s: Sample) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "sample", "t": s.at, "node": s.path.node, "link": s.path.link,
        "target": s.path.target, "kind": str(s.kind), "ok": s.ok, "rtt_s": s.rtt_s,
        "error": _error_json(s.error)}
    if s.phases:
        out["phases"] = dict(s.phases)
    return out


def measurement_to_json(m: Measurement) -> dict[str, Any]:
    return {
        "type": "measurement", "t": m.at, "node": m.path.node, "link": m.path.link,
        "target": m.path.target, "kind": str(m.kind), "window_s": m.window_s,
        "sent": m.sent, "received": m.received, "loss": m.loss,
        **{k: getattr(m, k) for k in _OPTIONAL_RTTS},
        "jitter_s": m.jitter_s, "mean_abs_diff_s": m.mean_abs_diff_s,
        "last_error": _error_json(m.last_error), "errors": dict(m.errors)}


def encode(record: Record) -> str:
    """One trace line (no newline) for a Sample or a Measurement."""
    body = sample_to_json(record) if isinstance(record, Sample) else measurement_to_json(record)
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


class TraceWriter:
    """Appends records to a trace file, one line each, flushed per record."""

    def __init__(self, path: str | Path) -> None:
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: Record) -> None:
        self._file.write(encode(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- decode ------------------------------------------------------------------------------


class _Fields:
    """Typed access to one line's object, raising TraceError on the first bad key."""

    def __init__(self, obj: Mapping[str, Any], line: int) -> None:
        self.obj = obj
        self.line = line

    def fail(self, msg: str) -> TraceError:
        return TraceError(self.line, msg)

    def has(self, key: str) -> bool:
        return key in self.obj

    def text(self, key: str) -> str:
        v = self.obj.get(key)
        if not isinstance(v, str) or not v:
            raise self.fail(f"{key!r}: expected a non-empty string, got {v!r}")
        return v

    def number(self, key: str, *, minimum: float | None = None, maximum: float | None = None,
               optional: bool = False) -> float | None:
        v = self.obj.get(key)
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise self.fail(f"{key!r}: expected a finite number, got {v!r}")
        x = float(v)
        if (minimum is not None and x < minimum) or (maximum is not None and x > maximum):
            raise self.fail(f"{key!r}: {x!r} is out of range [{minimum}, {maximum}]")
        return x

    def req(self, key: str, *, minimum: float | None = None,
            maximum: float | None = None) -> float:
        v = self.number(key, minimum=minimum, maximum=maximum)
        assert v is not None
        return v

    def count(self, key: str) -> int:
        v = self.obj.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise self.fail(f"{key!r}: expected a count (integer >= 0), got {v!r}")
        return v

    def error(self, key: str, *, optional: bool) -> ProbeError | None:
        v = self.obj.get(key)
        if v is None:
            if optional:
                return None
            raise self.fail(f"{key!r}: a failed sample needs an error object")
        if not isinstance(v, dict):
            raise self.fail(f"{key!r}: expected an object {{kind, detail}}, got {v!r}")
        kind, detail = v.get("kind"), v.get("detail", "")
        if kind not in _ERROR_KINDS:
            raise self.fail(f"{key}.kind: expected one of {', '.join(sorted(_ERROR_KINDS))}, "
                            f"got {kind!r}")
        if not isinstance(detail, str):
            raise self.fail(f"{key}.detail: expected a string, got {detail!r}")
        return ProbeError(kind, detail)

    def path(self) -> PathKey:
        return PathKey(self.text("node"), self.text("link"), self.text("target"))

    def kind(self) -> ProbeKind:
        v = self.obj.get("kind")
        try:
            return ProbeKind(str(v))
        except ValueError:
            kinds = ", ".join(k.value for k in ProbeKind)
            raise self.fail(f"'kind': expected one of {kinds}, got {v!r}") from None


def _sample(f: _Fields) -> Sample:
    ok = f.obj.get("ok")
    if not isinstance(ok, bool):
        raise f.fail(f"'ok': expected true or false, got {ok!r}")
    rtt = f.number("rtt_s", minimum=0.0, optional=True)
    if ok and rtt is None:
        raise f.fail("'rtt_s': a successful sample needs an rtt")
    if not ok and rtt is not None:
        raise f.fail("'rtt_s': a failed sample has no rtt (null)")
    phases: dict[str, float] = {}
    raw = f.obj.get("phases")
    if raw is not None:
        if not isinstance(raw, dict):
            raise f.fail(f"'phases': expected an object, got {raw!r}")
        for name in raw:
            phases[str(name)] = f.__class__(raw, f.line).req(name, minimum=0.0)
    error = None if ok else f.error("error", optional=False)
    return Sample(path=f.path(), kind=f.kind(), at=f.req("t"), ok=ok, rtt_s=rtt,
                  phases=MappingProxyType(phases), error=error)


def _measurement(f: _Fields) -> Measurement:
    sent, received = f.count("sent"), f.count("received")
    if received > sent:
        raise f.fail(f"'received': {received} is more than 'sent' ({sent})")
    errors_raw = f.obj.get("errors", {})
    if not isinstance(errors_raw, dict):
        raise f.fail(f"'errors': expected an object, got {errors_raw!r}")
    errors = {}
    for k in errors_raw:
        if k not in _ERROR_KINDS:
            raise f.fail(f"'errors': unknown error kind {k!r}")
        errors[k] = _Fields(errors_raw, f.line).count(k)
    rtts = {k: f.number(k, minimum=0.0, optional=True) for k in _OPTIONAL_RTTS}
    return Measurement(
        path=f.path(), kind=f.kind(), at=f.req("t"), window_s=f.req("window_s", minimum=0.0),
        sent=sent, received=received, loss=f.req("loss", minimum=0.0, maximum=1.0),
        rtt_min=rtts["rtt_min"], rtt_p50=rtts["rtt_p50"], rtt_p95=rtts["rtt_p95"],
        rtt_p99=rtts["rtt_p99"], rtt_max=rtts["rtt_max"], rtt_mean=rtts["rtt_mean"],
        jitter_s=f.req("jitter_s", minimum=0.0),
        mean_abs_diff_s=f.req("mean_abs_diff_s", minimum=0.0), ewma_rtt=rtts["ewma_rtt"],
        last_error=f.error("last_error", optional=True),
        errors=MappingProxyType(errors))


def decode_line(text: str, line: int = 1) -> Record:
    """The record on one trace line; TraceError (with ``line``) when it is not valid."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise TraceError(line, f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise TraceError(line, f"expected a JSON object, got {type(obj).__name__}")
    f = _Fields(obj, line)
    kind = obj.get("type", "sample")
    if kind == "sample":
        return _sample(f)
    if kind == "measurement":
        return _measurement(f)
    raise TraceError(line, f"'type': expected 'sample' or 'measurement', got {kind!r}")


def decode_lines(lines: Iterable[str], source: str = "") -> Iterator[Record]:
    """Records of ``lines`` in order, skipping blank and ``#`` lines."""
    for n, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            yield decode_line(text, n)
        except TraceError as exc:
            raise TraceError(n, exc.message, source) from None


def read_trace(path: str | Path) -> list[Record]:
    """Every record of the trace file at ``path``, in file order."""
    with open(path, encoding="utf-8") as fh:
        return list(decode_lines(fh, str(path)))
