"""Nearest routing: great-circle distance, blended with measured latency."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geo.nearest import great_circle_km, rank_sites

HK = (22.32, 114.17)
SG = (1.35, 103.82)
TYO = (35.68, 139.69)
SITES = [("hk", HK), ("sg", SG), ("tyo", TYO), ("nowhere", None)]

POINT = st.tuples(st.floats(-90, 90), st.floats(-180, 180))


def test_known_distances() -> None:
    assert great_circle_km(HK, SG) == pytest.approx(2590, rel=0.02)
    assert great_circle_km(HK, TYO) == pytest.approx(2890, rel=0.02)
    assert great_circle_km(HK, HK) == 0.0


@given(POINT, POINT, POINT)
def test_metric_properties(a: tuple[float, float], b: tuple[float, float],
                           c: tuple[float, float]) -> None:
    ab, ba = great_circle_km(a, b), great_circle_km(b, a)
    assert ab == pytest.approx(ba, abs=1e-6) and 0 <= ab <= math.pi * 6371.01
    assert great_circle_km(a, c) <= ab + great_circle_km(b, c) + 1e-6


def test_geography_alone_then_measurements_win() -> None:
    manila = (14.6, 121.0)
    assert [r.site for r in rank_sites(manila, SITES)] == ["hk", "sg", "tyo", "nowhere"]
    blended = rank_sites(manila, SITES, {"hk": 90.0, "sg": 30.0})
    assert [r.site for r in blended][:3] == ["sg", "tyo", "hk"]  # a congested HK loses
    assert blended[0].reason.startswith("sg: score") and "measured 30.0 ms" in blended[0].reason
    assert rank_sites(None, SITES, {"tyo": 5.0})[0].site == "tyo"
