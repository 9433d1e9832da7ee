"""Probe agents: sample every path (node, link, target) and fold samples into Measurements.

Stage 1 of the flow. This package knows nothing of DNS, plans or geo.
"""

from probes.measurement import Measurement, PathKey, ProbeError, ProbeKind, Sample

__all__ = ["Measurement", "PathKey", "ProbeError", "ProbeKind", "Sample"]
