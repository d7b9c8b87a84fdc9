"""Settings for primer-cache: environment variables and the optional PRIMER_CONFIG TOML file."""

from config.errors import ConfigError
from config.groups import (
    CacheSettings,
    CelerySettings,
    CheckSettings,
    ListenerSettings,
    MetricsSettings,
    PartitionSettings,
    RefreshSettings,
    StatusSettings,
    TablesSettings,
    WarmSettings,
)
from config.mysql import MySQLSettings
from config.query import Query
from config.replicas import ReplicaSettings
from config.settings import Settings, load_settings

__all__ = [
    "CacheSettings",
    "CelerySettings",
    "CheckSettings",
    "ConfigError",
    "ListenerSettings",
    "MetricsSettings",
    "MySQLSettings",
    "PartitionSettings",
    "Query",
    "RefreshSettings",
    "ReplicaSettings",
    "Settings",
    "StatusSettings",
    "TablesSettings",
    "WarmSettings",
    "load_settings",
]
