"""Configuration: defaults reproduce the seed; every bad value is named; processes exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, Query, load_settings
from config.query import SEED_WARM_PATTERNS
from tests.services import child_env, cli

GOOD = {"PRIMER_MYSQL_URL": "mysql://u:secret@db.example:3307/megamind"}


def test_defaults_reproduce_the_seed() -> None:
    s = load_settings(GOOD)
    assert s.cache.key_prefix == "megamind:primer:"
    assert s.cache.ttl_seconds == 3600 and s.cache.compression is True
    assert s.warm.patterns == SEED_WARM_PATTERNS
    assert s.cache.ignored_columns == {"access_count", "last_accessed", "updated_at"}
    assert (s.mysql.host, s.mysql.port, s.mysql.user, s.mysql.database) == (
        "db.example",
        3307,
        "u",
        "megamind",
    )
    assert s.celery.broker_url == "redis://127.0.0.1:6379/1"  # the cache Redis, next db
    assert "secret" not in repr(s) and "secret" not in repr(s.mysql)


def test_megamind_variables_serve_when_the_url_is_unset() -> None:
    s = load_settings(
        {
            "MEGAMIND_DB_HOST": "h",
            "MEGAMIND_DB_PORT": "3310",
            "MEGAMIND_DB_NAME": "mm",
            "MEGAMIND_DB_USER": "u",
            "MEGAMIND_DB_PASSWORD": "p",
        }
    )
    assert (s.mysql.host, s.mysql.port, s.mysql.database, s.mysql.password) == (
        "h",
        3310,
        "mm",
        "p",
    )


def test_every_bad_setting_is_named_at_once(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(
        "[cache]\nttl_seconds = -5\ncompression = 'yes'\nbogus = 1\n"
        "[[warm.patterns]]\ninclude_categories = ['security']\nenforcement_level = 'urgent'\n"
        "[[warm.patterns]]\nlimit = -3\npriority_threshold = 1.5\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings(
            {
                "PRIMER_MYSQL_URL": "postgres://h/db",
                "PRIMER_REDIS_URL": "redis://h:1/x",
                "PRIMER_CONFIG": str(toml),
                "PRIMER_SERVER_ID": "zero",
                "PRIMER_METRICS_PORT": "99999",
            }
        )
    text = str(err.value)
    for needle in [
        "postgres://h/db",
        "redis://h:1/x",
        "ttl_seconds = -5",
        "compression = 'yes'",
        "cache.bogus",
        "'urgent'",
        "limit -3",
        "1.5",
        "PRIMER_SERVER_ID 'zero'",
        "PRIMER_METRICS_PORT '99999'",
    ]:
        assert needle in text, needle


def test_missing_database_url_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="PRIMER_MYSQL_URL"):
        load_settings({})


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings({**GOOD, "PRIMER_CONFIG": str(tmp_path / "missing.toml")})
    bad = tmp_path / "bad.toml"
    bad.write_text("[cache\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({**GOOD, "PRIMER_CONFIG": str(bad)})


def test_template_and_state_prefix_are_checked(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(
        "[cache]\nkey_template = 'primer:{cats}:{limit}{sort_by}'\n"
        "key_prefix = 'app:'\nstate_prefix = 'app:primer:'\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings({**GOOD, "PRIMER_CONFIG": str(toml)})
    assert "must use each of" in str(err.value)
    assert "two fields with no text between them" in str(err.value)
    assert "state_prefix" in str(err.value)


def test_refresh_settings_are_checked_and_named(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(
        "[refresh]\nmax_keys = -1\nidle_seconds = 0\nmin_freq = 'hot'\nbudget = 5\n"
        "[cache]\nkey_prefix = 'primer-cache:lease:'\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings({**GOOD, "PRIMER_CONFIG": str(toml)})
    text = str(err.value)
    assert "refresh.max_keys = -1" in text
    assert "refresh.idle_seconds = 0" in text
    assert "refresh.min_freq = 'hot'" in text
    assert "unknown setting refresh.budget" in text
    assert "overlaps the lease keys'" in text
    toml.write_text("[refresh]\nmax_keys = 0\nidle_seconds = 5\n")
    s = load_settings({**GOOD, "PRIMER_CONFIG": str(toml)})
    assert (s.refresh.max_keys, s.refresh.idle_seconds) == (0, 5)
    assert load_settings(GOOD).refresh.max_keys == 100  # on by default


def test_monitoring_settings_are_checked_and_named(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[status]\nmax_lag_s = 0\n[check]\nsample = -5\nevery_s = 'often'\n")
    env = {
        **GOOD,
        "PRIMER_CONFIG": str(toml),
        "PRIMER_WORKER_METRICS_PORT": "70000",
        "PRIMER_METRICS_ADDR": "localhost:9",
        "PRIMER_LOG_FORMAT": "yaml",
    }
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    text = str(err.value)
    assert "status.max_lag_s = 0" in text
    assert "check.sample = -5" in text
    assert "check.every_s = 'often'" in text
    assert "PRIMER_WORKER_METRICS_PORT '70000'" in text
    assert "PRIMER_METRICS_ADDR 'localhost:9'" in text
    assert "PRIMER_LOG_FORMAT 'yaml'" in text
    toml.write_text("[status]\nmax_lag_s = 5\n[check]\nsample = 50\nevery_s = 60\n")
    good = {**env, "PRIMER_WORKER_METRICS_PORT": "9101", "PRIMER_METRICS_ADDR": "0.0.0.0"}
    s = load_settings({**good, "PRIMER_LOG_FORMAT": "JSON"})
    assert (s.status.max_lag_s, s.check.sample, s.check.every_s) == (5, 50, 60)
    assert (s.metrics.worker_port, s.metrics.addr) == (9101, "0.0.0.0")
    defaults = load_settings(GOOD)
    assert (defaults.status.max_lag_s, defaults.check.sample, defaults.metrics.addr) == (
        60,
        0,
        "127.0.0.1",
    )


def test_empty_prefix_is_allowed(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[cache]\nkey_prefix = ''\n[warm]\npatterns = []\n")
    s = load_settings({**GOOD, "PRIMER_CONFIG": str(toml)})
    assert s.cache.key_prefix == "" and s.warm.patterns == ()


def test_query_from_params_names_bad_values() -> None:
    with pytest.raises(ValueError, match=r"'sometimes'.*limit 0"):
        Query.from_params({"enforcement_level": "sometimes", "limit": 0})
    assert Query.from_params({"include_categories": ["b", "a"]}).categories == ("a", "b")


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"PRIMER_MYSQL_URL": "mysql://root@127.0.0.1:notaport/db"}, "notaport"),
        ({"PRIMER_MYSQL_URL": "mysql://root@127.0.0.1:3306"}, "names no database"),
    ],
)
@pytest.mark.parametrize("command", [["status"], ["listen"], ["invalidate", "--all"]])
def test_commands_exit_2_on_bad_configuration(
    env: dict[str, str], needle: str, command: list[str]
) -> None:
    done = cli(child_env(env), *command, timeout=60)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr


def test_bad_toml_value_exits_2(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[listener]\nbatch_max_changes = 0\n")
    done = cli(child_env({**GOOD, "PRIMER_CONFIG": str(toml)}), "status", timeout=60)
    assert done.returncode == 2
    assert "listener.batch_max_changes = 0" in done.stderr


def test_operator_argument_errors_exit_2() -> None:
    done = cli(child_env(GOOD), "invalidate", "--element", "x", "--all")
    assert done.returncode == 2 and "not allowed with" in done.stderr
    done = cli(child_env(GOOD), "invalidate")
    assert done.returncode == 2 and "required" in done.stderr
