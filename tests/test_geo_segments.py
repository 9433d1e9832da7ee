"""Segment matching agrees with a brute-force reference (stdlib ipaddress) on random CIDR
sets and addresses, for single segments and first-match over several."""

from __future__ import annotations

import ipaddress

import netaddr
from hypothesis import given, settings
from hypothesis import strategies as st

from geo.client import ClientInfo
from geo.segment import DEFAULT_SEGMENT, Segment, SegmentMatcher

V4 = st.builds(lambda n, p: ipaddress.ip_network((n, p), strict=False),
               st.integers(0, 2**32 - 1), st.integers(0, 32))
V6 = st.builds(lambda n, p: ipaddress.ip_network((n, p), strict=False),
               st.integers(0, 2**128 - 1), st.integers(0, 128))
NETS = st.lists(st.one_of(V4, V6), min_size=1, max_size=6)  # empty = criterion unused


def _near(nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> st.SearchStrategy[str]:
    """Addresses inside, at the edges of, and outside the given networks."""
    picks: list[st.SearchStrategy[str]] = [
        st.integers(0, 2**32 - 1).map(lambda i: str(ipaddress.IPv4Address(i))),
        st.integers(0, 2**128 - 1).map(lambda i: str(ipaddress.IPv6Address(i)))]
    for n in nets:
        size = n.num_addresses
        base = int(n.network_address)
        top = 2**32 - 1 if n.version == 4 else 2**128 - 1
        cls = ipaddress.IPv4Address if n.version == 4 else ipaddress.IPv6Address
        picks.append(st.integers(max(0, base - 2), min(top, base + size + 1)).map(
            lambda i, c=cls: str(c(i))))
    return st.one_of(picks)


def _reference(nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network], addr: str) -> bool:
    a = ipaddress.ip_address(addr)
    return any(a.version == n.version and a in n for n in nets)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), nets=NETS)
def test_cidr_segment_matches_like_brute_force(data: st.DataObject, nets: list) -> None:  # type: ignore[type-arg]
    seg = Segment("s", cidrs=netaddr.IPSet(str(n) for n in nets))
    for _ in range(5):
        addr = data.draw(_near(nets))
        assert seg.matches(ClientInfo.from_text(addr)) is _reference(nets, addr), (nets, addr)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), groups=st.lists(st.lists(V4, min_size=1, max_size=3), min_size=1,
                                       max_size=4))
def test_first_match_like_brute_force(data: st.DataObject, groups: list) -> None:  # type: ignore[type-arg]
    segments = [Segment(f"s{i}", cidrs=netaddr.IPSet(str(n) for n in g))
                for i, g in enumerate(groups)]
    matcher = SegmentMatcher(segments)
    flat = [n for g in groups for n in g]
    for _ in range(5):
        addr = data.draw(_near(flat))
        expected = next((f"s{i}" for i, g in enumerate(groups) if _reference(g, addr)),
                        DEFAULT_SEGMENT)
        assert matcher.match(ClientInfo.from_text(addr)) == expected


# regions (GeoIP-filled ClientInfo.region, optionally qualified by country) --------------
COUNTRY = st.sampled_from([None, "CN", "HK", "US", "A-B", "C"])
REGION = st.sampled_from([None, "GD", "SH", "island", "B-GD", "44", "CN-GD"])
REGION_VALUES = st.frozensets(st.sampled_from(
    ["GD", "SH", "island", "CN-GD", "HK-island", "US-GD", "A-B-GD", "C-GD", "CN-CN-GD",
     "44", "CN-44", "B-GD"]), max_size=4)


def _region_reference(regions: frozenset[str], country: str | None,
                      region: str | None) -> bool:
    """Plain value: the region itself. CC-SUB (CC two characters): country CC, region SUB."""
    if region is None:
        return False
    for value in regions:
        if value == region:
            return True
        if (country is not None and len(country) == 2 and len(value) > 3 and value[2] == "-"
                and value[:2] == country and value[3:] == region):
            return True
    return False


def _geo_client(country: str | None, region: str | None) -> ClientInfo:
    return ClientInfo(netaddr.IPAddress("203.0.113.7"), 32, country=country, region=region)


@settings(max_examples=300, deadline=None)
@given(regions=REGION_VALUES.filter(bool), country=COUNTRY, region=REGION)
def test_region_segment_matches_like_brute_force(regions: frozenset[str], country: str | None,
                                                 region: str | None) -> None:
    seg = Segment("r", regions=regions)
    assert not seg.is_catch_all and seg.uses_geo
    assert seg.matches(_geo_client(country, region)) is _region_reference(
        regions, country, region), (regions, country, region)


@settings(max_examples=200, deadline=None)
@given(groups=st.lists(st.tuples(REGION_VALUES, st.frozensets(
    st.sampled_from(["CN", "HK", "US"]), max_size=2)), min_size=1, max_size=4),
    country=COUNTRY, region=REGION)
def test_first_match_with_regions_and_countries_like_brute_force(
        groups: list[tuple[frozenset[str], frozenset[str]]], country: str | None,
        region: str | None) -> None:
    """Regions AND countries (an empty criterion is unused); first match wins."""
    segments = [Segment(f"s{i}", regions=r, countries=c) for i, (r, c) in enumerate(groups)]
    expected = next((f"s{i}" for i, (r, c) in enumerate(groups)
                     if (not r or _region_reference(r, country, region))
                     and (not c or country in c)), DEFAULT_SEGMENT)
    assert SegmentMatcher(segments).match(_geo_client(country, region)) == expected
