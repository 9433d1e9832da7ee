"""Every configuration default, in one place.

The loader's spec tables (``edge.config.tables``) and the JSON Schema read these constants, so a
default documented in ``docs/config.schema.json`` is the default the loader applies.
A few defaults depend on other values (a link's ``carrier`` is its name, a target's port depends
on its kind, an endpoint takes its link's weight and answers); those rules are stated next to
their constants below and applied by ``edge.config.loader``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

CONFIG_VERSION: Final = 1

# health ------------------------------------------------------------------------------------
HEALTH_WINDOW: Final = 10  # samples in the sliding window
HEALTH_RISE: Final = 3  # consecutive good measurements before a link comes up
HEALTH_FALL: Final = 3  # consecutive bad measurements before a link goes down
HEALTH_HOLD_DOWN_S: Final = 10.0  # a link stays out this long after going down
HEALTH_STALE_AFTER_S: Final = 5.0  # no data for this long -> unknown
HEALTH_QUORUM: Final = "majority"
HEALTH_DEGRADED_WEIGHT: Final = 0.5  # weight factor of a degraded link

# Quality bands: a link is DEGRADED / DOWN when any set bound is exceeded.
DEGRADED_LOSS: Final = 0.02
DEGRADED_RTT_P95_MS: Final = 150.0
DEGRADED_JITTER_MS: Final = 20.0
DOWN_LOSS: Final = 0.10
DOWN_RTT_P95_MS: Final = 300.0
DOWN_JITTER_MS: Final = 50.0
RECOVER_RATIO: Final = 0.8  # exit band = enter band x ratio (hysteresis)

# links -------------------------------------------------------------------------------------
LINK_WEIGHT: Final = 100.0
# carrier: defaults to the link's name.

# targets -----------------------------------------------------------------------------------
TARGET_INTERVAL_S: Final = 1.0
TARGET_TIMEOUT_S: Final = 1.0
TARGET_TIMEOUT_MAX_FACTOR: Final = 10  # timeout <= interval x this
HTTP_PATH: Final = "/"
HTTP_SCHEME: Final = "http"
HTTP_EXPECT_STATUS: Final = (200,)
DNS_QNAME: Final = "."
DNS_QTYPE: Final = "SOA"
DNS_TRANSPORT: Final = "udp"
DNS_EXPECT_RCODE: Final = "NOERROR"
# Default port per kind; "tcp" has none (the port is required), icmp has no port at all.
DEFAULT_PORTS: Final[Mapping[str, int]] = MappingProxyType({"dns": 53, "http": 80, "https": 443})
ICMP_PORT: Final = 0  # TargetSpec.port of an icmp target

# zones -------------------------------------------------------------------------------------
ZONE_TTL: Final = 3600  # TTL of the SOA and NS records
SOA_REFRESH: Final = 3600
SOA_RETRY: Final = 600
SOA_EXPIRE: Final = 604800
SOA_MINIMUM: Final = 60
SOA_RNAME_LOCAL_PART: Final = "hostmaster"  # rname default: hostmaster.<zone>
# soa.mname defaults to the zone's first ns.

# services ----------------------------------------------------------------------------------
SERVICE_TTL: Final = 60
SERVICE_FAILOVER_TTL: Final = 15  # the default is min(this, ttl)
SERVICE_MAX_ANSWERS: Final = 2
SERVICE_FAILOVER_THRESHOLD: Final = 0.5
# endpoint weight: the link's weight; endpoint addresses: the link's answers (v4 then v6),
# filled in by the loader when an endpoint has neither addresses nor cname.

# guard -------------------------------------------------------------------------------------
GUARD_FREEZE: Final = False
GUARD_FAIL_OPEN: Final = True

# dns ---------------------------------------------------------------------------------------
DNS_LISTEN: Final = ("127.0.0.1:5353",)
