"""probes/trace.py: round trips, line-numbered errors, a fuzzed parser; the replay CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.cli import main
from probes.measurement import Measurement, PathKey, ProbeError, ProbeKind, Sample
from probes.trace import TraceError, TraceWriter, decode_line, decode_lines, encode, read_trace
from probes.window import Window

KEY = PathKey("hk-1", "cn2", "pop")
ROOT = Path(__file__).parent


def test_sample_round_trip() -> None:
    ok = Sample(KEY, ProbeKind.HTTP, 1700000000.25, True, 0.038,
                phases=MappingProxyType({"connect": 0.01}))
    bad = Sample(KEY, ProbeKind.TCP, 1700000001.0, False, None,
                 error=ProbeError("refused", "connection refused"))
    for s in (ok, bad):
        assert decode_line(encode(s)) == s
    assert json.loads(encode(bad)) == {
        "type": "sample", "t": 1700000001.0, "node": "hk-1", "link": "cn2", "target": "pop",
        "kind": "tcp", "ok": False, "rtt_s": None,
        "error": {"kind": "refused", "detail": "connection refused"}}


def test_measurement_round_trip() -> None:
    w = Window(10)
    w.add(Sample(KEY, ProbeKind.TCP, 1.0, True, 0.04))
    w.add(Sample(KEY, ProbeKind.TCP, 2.0, False, None, error=ProbeError("timeout", "1 s")))
    w.add(Sample(KEY, ProbeKind.TCP, 3.0, True, 0.05))
    m = w.measurement(KEY, ProbeKind.TCP, 3.0)
    back = decode_line(encode(m))
    assert isinstance(back, Measurement) and back == m


def test_a_line_without_type_is_a_sample() -> None:
    line = ('{"t": 5, "node": "n", "link": "l", "target": "x", "kind": "icmp", "ok": true, '
            '"rtt_s": 0.001, "error": null}')
    s = decode_line(line)
    assert isinstance(s, Sample) and s.at == 5.0 and s.rtt_s == 0.001


@pytest.mark.parametrize(("line", "message"), [
    ("not json", "not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"type": "bogus"}', "'type': expected 'sample' or 'measurement'"),
    ('{"t": 1, "node": "n", "link": "l", "target": "x", "kind": "tcp", "ok": "yes"}',
     "'ok': expected true or false"),
    ('{"t": 1, "node": "n", "link": "l", "target": "x", "kind": "tcp", "ok": true}',
     "'rtt_s': a successful sample needs an rtt"),
    ('{"t": 1, "node": "n", "link": "l", "target": "x", "kind": "tcp", "ok": false}',
     "'error': a failed sample needs an error object"),
    ('{"t": 1, "node": "n", "link": "l", "target": "x", "kind": "tcp", "ok": false, '
     '"error": {"kind": "gremlins"}}', "error.kind: expected one of"),
    ('{"t": 1, "node": "", "link": "l", "target": "x", "kind": "tcp", "ok": true, '
     '"rtt_s": 0.1}', "'node': expected a non-empty string"),
    ('{"t": 1, "node": "n", "link": "l", "target": "x", "kind": "udp", "ok": true, '
     '"rtt_s": 0.1}', "'kind': expected one of"),
    ('{"t": 1e999, "node": "n", "link": "l", "target": "x", "kind": "tcp", "ok": true, '
     '"rtt_s": 0.1}', "'t': expected a finite number"),
    ('{"type": "measurement", "t": 1, "node": "n", "link": "l", "target": "x", '
     '"kind": "tcp", "sent": 2, "received": 3}', "'received': 3 is more than 'sent'"),
])
def test_errors_name_the_line_and_key(line: str, message: str) -> None:
    with pytest.raises(TraceError) as info:
        list(decode_lines(["# a comment", "", line], source="t.jsonl"))
    assert info.value.line == 3
    assert str(info.value).startswith("t.jsonl:3: ")
    assert message in str(info.value)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "t", "node", "link", "target", "kind", "ok", "rtt_s",
                         "error", "sent", "received", "loss", "phases", "errors", "kind",
                         "detail", "window_s", "jitter_s", "mean_abs_diff_s", "rtt_p50"]),
        inner, max_size=12),
    max_leaves=20)


@settings(max_examples=250, deadline=None)
@given(st.one_of(st.text(max_size=200), JSONISH.map(lambda v: json.dumps(v))))
def test_fuzz_parser_raises_only_trace_errors(text: str) -> None:
    try:
        record = decode_line(text, 7)
    except TraceError as exc:
        assert exc.line == 7
    else:
        assert isinstance(record, Sample | Measurement)
        assert math.isfinite(record.at)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e10), st.booleans(),
                          st.floats(0, 10, allow_subnormal=False)), max_size=20))
def test_fuzz_round_trip_of_valid_samples(items: list[tuple[float, bool, float]]) -> None:
    samples = [Sample(KEY, ProbeKind.DNS, at, ok, rtt if ok else None,
                      error=None if ok else ProbeError("rcode", "SERVFAIL"))
               for at, ok, rtt in items]
    assert list(decode_lines(encode(s) for s in samples)) == samples


def test_writer_and_reader(tmp_path: Path) -> None:
    target = tmp_path / "trace.jsonl"
    with TraceWriter(target) as w:
        for i in range(3):
            w.write(Sample(KEY, ProbeKind.TCP, float(i), True, 0.01 * (i + 1)))
    assert [s.at for s in read_trace(target)] == [0.0, 1.0, 2.0]


# --- the CLI ------------------------------------------------------------------------------


def _write_trace(path: Path, lost_from: float) -> None:
    with TraceWriter(path) as w:
        for i in range(40):
            t = 1_700_000_000.0 + i
            for link in ("cn2", "pccw"):
                key = PathKey("hk-1", link, "pop")
                if link == "cn2" and i >= lost_from:
                    w.write(Sample(key, ProbeKind.HTTP, t, False, None,
                                   error=ProbeError("timeout", "no reply")))
                else:
                    w.write(Sample(key, ProbeKind.HTTP, t, True, 0.04))


def test_cli_replay_prints_every_decision(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.jsonl"
    _write_trace(trace, 20)
    cfg = str(ROOT / "config" / "good-minimal.yaml")
    assert main(["replay", "--config", cfg, str(trace)]) == 0
    out = capsys.readouterr().out
    assert "link cn2: falling -> down: down on 1/1 paths" in out
    assert "+   23.000s link cn2: falling -> down" in out
    assert "answers www.example.hk [default]: 198.51.100.20@100 (tier 2" in out
    assert out.strip().splitlines()[-1].startswith("80 records over 39.0 s")
    assert main(["replay", "--config", cfg, str(trace), "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    downs = [d for d in js["decisions"] if d["type"] == "link" and d["state"] == "down"]
    assert downs and downs[0]["t"] == 1_700_000_023.0 and downs[0]["link"] == "cn2"


def test_cli_replay_bad_trace_names_the_line(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.jsonl"
    _write_trace(trace, 100)
    with trace.open("a") as fh:
        fh.write('{"t": 1, "ok": 3}\n')
    cfg = str(ROOT / "config" / "good-minimal.yaml")
    assert main(["replay", "--config", cfg, str(trace)]) == 2
    err = capsys.readouterr().err
    assert f"{trace}:81: 'ok': expected true or false" in err
