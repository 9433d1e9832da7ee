"""The measurement bus a config asks for: in-process (default) or Redis Streams."""

from __future__ import annotations

import os

from edge.config.schema import BusSettings, Config
from probes.bus import MeasurementBus
from probes.bus.memory import MemoryBus
from probes.bus.redis_streams import RedisClient, RedisSettings, RedisStreamsBus, connect


class BusConfigError(ValueError):
    """The bus section cannot be used as it is (e.g. its password variable is unset)."""


def redis_settings(bus: BusSettings) -> RedisSettings:
    password = bus.password
    if bus.password_env is not None:
        password = os.environ.get(bus.password_env)
        if password is None:
            raise BusConfigError(f"bus.password_env: the environment variable "
                                 f"{bus.password_env} is not set")
    return RedisSettings(url=bus.url, sentinels=bus.sentinels, master=bus.master,
                         cluster=bus.cluster, username=bus.username, password=password,
                         tls=bus.tls, tls_ca_file=bus.tls_ca_file,
                         tls_cert_file=bus.tls_cert_file, tls_key_file=bus.tls_key_file,
                         tls_verify=bus.tls_verify)


def redis_client(config: Config) -> RedisClient:
    """A new client for the config's Redis (the caller closes it)."""
    return connect(redis_settings(config.bus))


def engine_group(config: Config, identity: str | None = None) -> str:
    """bus.group, else one group per engine so that each sees every measurement."""
    return config.bus.group or f"engine-{identity or config.node.name}"


def make_bus(config: Config, *, group: str | None = None,
             consumer: str | None = None) -> MeasurementBus:
    """The bus of ``config``: a MemoryBus, or a RedisStreamsBus whose subscriptions read
    through consumer group ``group`` (default: ``engine_group``). Raises BusConfigError."""
    bus = config.bus
    if bus.kind != "redis":
        return MemoryBus()
    return RedisStreamsBus(redis_client(config), stream=bus.stream, maxlen=bus.maxlen,
                           group=group or engine_group(config), consumer=consumer,
                           buffer_max=bus.buffer)
