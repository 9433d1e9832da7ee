"""Turn an operator's CSV of prefixes into a MaxMind-format database (mmdb-writer), so their
own map (prefix -> region / line / country / ASN) is looked up like a GeoIP database.

CSV: a header row naming the columns; ``prefix`` is required (an IPv4 or IPv6 CIDR or
address); ``asn`` (an integer) and any other column (text: ``region``, ``line``,
``country``, ``org``, ...) become the record's fields; empty cells are left out. Blank
lines and lines starting with ``#`` are skipped. A prefix given twice is an error; nested
prefixes are fine (the more specific wins, as in any longest-prefix match).
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import netaddr
from mmdb_writer import MMDBWriter

DATABASE_TYPE = "edgesteer-Lines"


class CsvError(ValueError):
    def __init__(self, line: int, message: str, source: str = "") -> None:
        super().__init__(f"{source or 'line'}{':' if source else ' '}{line}: {message}")
        self.line = line


@dataclass(slots=True)
class Table:
    rows: list[tuple[netaddr.IPNetwork, dict[str, Any]]] = field(default_factory=list)


def parse_csv(lines: Iterable[str], source: str = "") -> Table:
    body = [(n, ln) for n, ln in enumerate(lines, start=1)
            if ln.strip() and not ln.lstrip().startswith("#")]
    if not body:
        raise CsvError(1, "empty: expected a header row with a 'prefix' column", source)
    reader = csv.reader([ln for _, ln in body])
    header = [h.strip().lower() for h in next(reader)]
    if "prefix" not in header:
        raise CsvError(body[0][0], f"the header {header} has no 'prefix' column", source)
    if len(set(header)) != len(header) or "" in header:
        raise CsvError(body[0][0], "header columns must be named and unique", source)
    table, seen = Table(), set()
    for (n, _), row in zip(body[1:], reader, strict=True):
        if len(row) != len(header):
            raise CsvError(n, f"expected {len(header)} columns, got {len(row)}", source)
        cells = {k: v.strip() for k, v in zip(header, row, strict=True)}
        try:
            net = netaddr.IPNetwork(cells.pop("prefix"))
        except (netaddr.AddrFormatError, ValueError, TypeError):
            raise CsvError(n, "prefix: expected a CIDR, e.g. 202.96.0.0/13", source) from None
        if net.cidr in seen:
            raise CsvError(n, f"prefix {net.cidr} is given twice", source)
        seen.add(net.cidr)
        record: dict[str, Any] = {}
        for k, v in cells.items():
            if not v:
                continue
            if k == "asn":
                if not v.isdigit() or not 0 < int(v) < 2**32:
                    raise CsvError(n, f"asn: expected an AS number, got {v!r}", source)
                record[k] = int(v)
            else:
                record[k] = v
        table.rows.append((net.cidr, record))
    return table


def write_mmdb(table: Table, out: str | Path, *, description: str = "edgesteer lines") -> int:
    """Write ``table`` as an IPv6 database with IPv4 mapped in; returns the prefix count.

    Less specific prefixes are inserted first so that a nested, more specific one wins.
    The file is written beside ``out`` and renamed over it, so a server reading ``out``
    sees the old database or the new one, never half of one.
    """
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=DATABASE_TYPE,
                        description=description)
    for net, record in sorted(table.rows, key=lambda r: (r[0].prefixlen
                                                         + (96 if r[0].version == 4 else 0))):
        writer.insert_network(netaddr.IPSet([net]), record)
    target = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:  # geo is a leaf package: edge.atomicfile's rename, written out
        writer.to_db_file(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return len(table.rows)


def build(csv_path: str | Path, out: str | Path) -> int:
    with open(csv_path, encoding="utf-8", newline="") as fh:
        table = parse_csv(fh, str(csv_path))
    return write_mmdb(table, out)
