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
HEALTH_STALE_DOWN: Final = "serve"  # a link out of service that goes stale: back as unknown
HEALTH_STALE_GRACE_S: Final = 5.0  # a link whose paths all went stale keeps its state this long
HEALTH_FAST_PROBE_FACTOR: Final = 4.0  # faster while a path changes state or is in doubt
# flap damping (BGP-style): penalty per flap, suppress / reuse thresholds, half-life
DAMPING_PENALTY: Final = 1000.0
DAMPING_SUPPRESS: Final = 2500.0
DAMPING_REUSE: Final = 750.0
DAMPING_HALF_LIFE_S: Final = 120.0
DAMPING_MAX_SUPPRESS_S: Final = 900.0

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
# ... or this many intervals when that is shorter (probing faster than every 0.5 s): a lost
# probe then counts before the third one after it is sent, so 200 ms probing notices a
# silent target or sustained loss within the bounds (1 s timeouts took 1.8 s / 3 s);
# a reply that late is over the default down band (rtt p95 300 ms) anyway
TARGET_TIMEOUT_INTERVALS: Final = 2.0
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
SERVICE_SPILL: Final = "cascade"  # below the threshold the next tier serves alone
SERVICE_ROUTING: Final = "weighted"  # no nearest-site preference
POOL_MIN_HEALTHY: Final = 0.0  # off
# endpoint site: the link's site.
# endpoint weight: the link's weight; endpoint addresses: the link's answers (v4 then v6),
# filled in by the loader when an endpoint has neither addresses nor cname.

# guard -------------------------------------------------------------------------------------
GUARD_FREEZE: Final = False
GUARD_FAIL_OPEN: Final = True
GUARD_MAX_SHIFT: Final = 0.5  # share of an answer set's weight that may move per step
GUARD_MAX_DEMOTIONS: Final = 0  # links demoted automatically per window; 0 = no limit
GUARD_DEMOTION_WINDOW_S: Final = 300.0

# dns ---------------------------------------------------------------------------------------
DNS_LISTEN: Final = ("127.0.0.1:5353",)

# anycast -----------------------------------------------------------------------------------
BGP_PORT: Final = 179
BGP_HOLD_TIME: Final = 90
ANYCAST_PREPEND_BY_TIER: Final = (0, 2, 4)  # extra local-AS copies: tier 1, 2, 3 and beyond
ANYCAST_DEGRADED_MED: Final = 1000  # MED of a degraded link's announcements
ANYCAST_DEGRADED_PREPEND: Final = 2  # extra prepends on a degraded link
ANYCAST_WITHDRAW_WHEN_SITE_UNHEALTHY: Final = True
ANYCAST_DRAINED_ACTION: Final = "withdraw"
ANYCAST_DRAIN_WAIT_S: Final = 0.0  # seconds between withdrawing and letting the service go
SPEAKER_MIN_INTERVAL_S: Final = 0.0  # per session, between two changes
SPEAKER_TIMEOUT_S: Final = 5.0
# bgp.local_as: anycast.local_as; bgp.speaker: the first speaker; prefix sessions: every
# link with a bgp session.

# bus ---------------------------------------------------------------------------------------
BUS_KIND: Final = "memory"  # memory (one process) | redis (many nodes)
BUS_REDIS_URL: Final = "redis://127.0.0.1:6379/0"  # used when neither sentinels nor cluster
BUS_SENTINEL_MASTER: Final = "mymaster"
BUS_STREAM: Final = "edgesteer:measurements"
BUS_MAXLEN: Final = 100_000  # stream entries (each a batch of measurements), trimmed with ~
BUS_PREFIX: Final = "edgesteer"  # coordination keys are {prefix}:... (one Cluster slot)
BUS_BUFFER: Final = 100_000  # measurements an agent keeps while Redis is away
BUS_LEASE_S: Final = 5.0  # leader lease; a standby takes over within about this
BUS_HISTORY: Final = 1000  # config versions and applied plans kept, each
BUS_TLS_VERIFY: Final = True
# bus.group: engine-<node.name>, so that every engine sees every measurement.
