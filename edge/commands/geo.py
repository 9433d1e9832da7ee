"""``edgesteer geo``: build an operator's MaxMind-format map from CSV, and look addresses up.

``edgesteer geo build CSV OUT.mmdb`` and ``edgesteer geo lookup --db DB [--db DB...] IP...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

import maxminddb

from geo.build import CsvError, build
from geo.geoip import GeoIP


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "geo", help="build a MaxMind-format map from a CSV; look addresses up",
        description="`build CSV OUT`: turn a CSV of prefixes (header row with a `prefix` "
        "column and any of region, line, country, asn, org) into a MaxMind-format database "
        "read like GeoIP. `lookup --db DB... IP...`: what the databases say about addresses "
        "(City, Country, ASN and edgesteer maps, first value wins).")
    p.set_defaults(run=run)
    geo_sub = p.add_subparsers(dest="geo_command", metavar="ACTION", required=True)
    b = geo_sub.add_parser(
        "build", help="CSV of prefixes -> MaxMind-format database",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Turn a CSV of client prefixes into a MaxMind-format database that "
        "geo.databases\nand `edgesteer geo lookup` read like GeoIP.\n\n"
        "The first row names the columns: `prefix` (an IPv4/IPv6 CIDR or address) is "
        "required;\n`asn` is an AS number; any other column (line, country, region, org, "
        "...) is text.\nEmpty cells are left out; blank lines and lines starting with # "
        "are skipped;\nnested prefixes are fine (the most specific wins); a prefix given "
        "twice is an error.\nOn any error nothing is written. Example "
        "(deploy/examples/hk-lines.csv):\n\n"
        "  prefix,line,country,region,asn,org\n"
        "  192.0.2.0/26,china-telecom,CN,SH,4134,ChinaNet\n"
        "  198.51.100.0/25,,HK,,4515,HKT\n")
    b.add_argument("csv", metavar="CSV", help="the operator's map (see above)")
    b.add_argument("out", metavar="OUT.mmdb", help="the database to write (replaced whole)")
    b.set_defaults(geo_run=run_build)
    lk = geo_sub.add_parser("lookup", help="look addresses up in one or more databases")
    lk.add_argument("--db", action="append", required=True, metavar="DB",
                    help="a MaxMind-format database (repeatable; first value wins)")
    lk.add_argument("ips", nargs="+", metavar="IP")
    lk.add_argument("--json", action="store_true")
    lk.set_defaults(geo_run=run_lookup)


def run(args: argparse.Namespace) -> int:
    code: int = args.geo_run(args)
    return code


def run_build(args: argparse.Namespace) -> int:
    try:
        n = build(args.csv, args.out)
    except CsvError as exc:
        print(f"edgesteer geo build: {exc}; nothing written", file=sys.stderr)
        return 2
    except OSError as exc:
        what = (f"cannot read {args.csv}" if exc.filename == args.csv
                else f"cannot write {args.out}")
        print(f"edgesteer geo build: {what}: {exc.strerror or exc}; nothing written",
              file=sys.stderr)
        return 1
    print(f"{args.out}: {n} prefixes")
    return 0


def run_lookup(args: argparse.Namespace) -> int:
    try:
        geo = GeoIP(args.db)
    except (OSError, maxminddb.InvalidDatabaseError) as exc:
        print(f"edgesteer geo lookup: {exc}", file=sys.stderr)
        return 2
    with geo:
        out = {}
        for ip in args.ips:
            try:
                out[ip] = dataclasses.asdict(geo.lookup(ip))
            except ValueError as exc:
                print(f"edgesteer geo lookup: {ip!r}: {exc}", file=sys.stderr)
                return 2
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for ip, info in out.items():
            shown = ", ".join(f"{k} {v}" for k, v in info.items() if v is not None)
            print(f"{ip}: {shown or 'not found'}")
    return 0
