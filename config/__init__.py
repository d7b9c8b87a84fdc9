"""Settings for primer-cache: environment variables and the optional PRIMER_CONFIG TOML file."""

from config.errors import ConfigError
from config.mysql import MySQLSettings
from config.query import Query
from config.settings import PartitionSettings, Settings, load_settings

__all__ = [
    "ConfigError",
    "MySQLSettings",
    "PartitionSettings",
    "Query",
    "Settings",
    "load_settings",
]
