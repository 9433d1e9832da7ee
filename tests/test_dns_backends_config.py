"""The `backends:` config section and the BACKENDS registry that builds from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from dns_backends import BACKENDS, build_backends
from dns_backends.powerdns import PowerDnsStore
from dns_backends.rfc2136 import Rfc2136Store
from dns_backends.zonefile import ZoneFileStore
from edge.config.loader import ConfigInvalid, load_config

BASE = """version: 1
node: {name: hk-1, site: hk}
sites: [{name: hk}]
links: [{name: cn2, priority: 1, answers: {v4: [203.0.113.10]}}]
zones: [{name: example.hk, ns: [ns1.example.hk]}, {name: example.org, ns: [ns1.example.org]}]
segments: [{name: cn, cidrs: [198.51.100.0/24]}]
services: [{name: www.example.hk, pools: [{name: p, endpoints: [{link: cn2}]}]}]
backends:
"""


def load(tmp_path: Path, backends: str) -> object:
    path = tmp_path / "c.yaml"
    path.write_text(BASE + backends)
    return load_config(str(path))


def test_every_kind_builds(tmp_path: Path) -> None:
    (tmp_path / "api.key").write_text("s3cret\n")
    (tmp_path / "k.key").write_text('key "k2" { algorithm hmac-sha512; secret "c2VjcmV0Mg=="; };')
    config = load(tmp_path, f"""
  - name: bind
    kind: rfc2136
    server: 127.0.0.1:5301
    tsig: {{name: k1, secret: c2VjcmV0}}
    views:
      - {{segment: cn, tsig: {{name: k2, algorithm: hmac-sha512, secret_file: {tmp_path}/k.key}}}}
      - {{segment: default, name: world}}
  - name: pdns
    kind: powerdns
    url: http://127.0.0.1:8081
    api_key_file: {tmp_path}/api.key
    zones: [example.hk]
  - name: files
    kind: zonefile
    path: {tmp_path}/{{zone}}.{{view}}.zone
    views: [{{segment: cn, tsig: {{name: k2, secret: c2VjcmV0Mg==}}}}, {{segment: default}}]
""")
    assert set(BACKENDS) == {"rfc2136", "powerdns", "zonefile"}
    bind, pdns, files = build_backends(config)  # type: ignore[arg-type]
    assert isinstance(bind.store, Rfc2136Store) and isinstance(pdns.store, PowerDnsStore)
    assert isinstance(files.store, ZoneFileStore)
    assert [(t.zone, t.segment, t.view) for t in bind.store.targets()] == [
        ("example.hk", "cn", "cn"), ("example.hk", "default", "world")]  # zones with services
    assert bind.store.views["cn"].key is not None
    assert bind.store.views["cn"].key.secret == "c2VjcmV0Mg=="  # read from the BIND key file
    assert bind.store.views["world"].key == bind.store.key  # falls back to the backend key
    assert pdns.store.api_key == "s3cret"
    assert files.store.views_conf is not None
    assert "match-clients { key k2; 198.51.100.0/24; };" in files.store.views_conf


@pytest.mark.parametrize(("backend", "message"), [
    ("{name: b, kind: rfc2136, tsig: {name: k, secret: c2Vj}}",
     "missing key `server`, required with kind: rfc2136"),
    ("{name: b, kind: rfc2136, server: '127.0.0.1:53', tsig: {name: k, secret: c2Vj, "
     "secret_file: /k}}", "expected exactly one of secret and secret_file"),
    ("{name: b, kind: rfc2136, server: '127.0.0.1:53', tsig: {name: k, secret: 'no way'}}",
     "base64"),
    ("{name: b, kind: rfc2136, server: '127.0.0.1:53', tsig: {name: k, secret: c2Vj, "
     "algorithm: hmac-sha3}}", "hmac-sha256"),
    ("{name: b, kind: powerdns, url: 'http://127.0.0.1:8081'}",
     "expected exactly one of api_key and api_key_file"),
    ("{name: b, kind: powerdns, url: 'http://127.0.0.1:8081', api_key: k, path: /x}",
     "`path` is only valid with kind: zonefile"),
    ("{name: b, kind: zonefile, path: /x, views: [{segment: nope}]}",
     "`nope` does not name a segment"),
    ("{name: b, kind: zonefile, path: /x, zones: [example.net]}",
     "`example.net` does not name a zone"),
])
def test_config_errors_name_the_key_and_the_fix(tmp_path: Path, backend: str,
                                                message: str) -> None:
    with pytest.raises(ConfigInvalid) as info:
        load(tmp_path, f"  - {backend}\n")
    assert message in str(info.value) and "backends[0]" in str(info.value)
