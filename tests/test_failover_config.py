"""Failover settings: several MySQL sources in PRIMER_MYSQL_URL, redis+sentinel:// URLs,
cache.wait_replicas. Every bad value is one line naming it; the defaults need nothing new."""

from __future__ import annotations

import pytest

from adapters.broker import kombu_broker
from config import ConfigError, load_settings
from config.sentinel import parse_sentinel_url

ONE = "mysql://u:pw@db1:3306/megamind"


def test_one_source_is_as_before() -> None:
    s = load_settings({"PRIMER_MYSQL_URL": ONE})
    assert s.sources == (s.mysql,) and s.mysql_sources == ()
    # not set: no WAIT on a single Redis, decided once connected (a cluster's default differs)
    assert s.cache.wait_replicas is None


def test_several_sources_in_order() -> None:
    s = load_settings({"PRIMER_MYSQL_URL": f"{ONE}, mysql://u:pw@db2:3307/megamind"})
    assert [(m.host, m.port) for m in s.sources] == [("db1", 3306), ("db2", 3307)]
    assert s.mysql is s.sources[0]


def test_bad_sources_are_named_one_line_each() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(
            {"PRIMER_MYSQL_URL": f"{ONE},,postgres://h/megamind,mysql://u@db1:3306/megamind"}
        )
    text = str(err.value)
    assert "PRIMER_MYSQL_URL source 2 is empty" in text
    assert "PRIMER_MYSQL_URL source 3 'postgres://h/megamind': scheme must be mysql://" in text
    assert "db1:3306 more than once" in text
    with pytest.raises(ConfigError) as err:
        load_settings({"PRIMER_MYSQL_URL": f"{ONE},mysql://u@db2/other"})
    assert "different databases (megamind, other)" in str(err.value)
    assert "pw" not in str(err.value)


def test_sentinel_urls() -> None:
    url = "redis+sentinel://:pw@s1:26379,s2:26380,s3/cache/2?sentinel_password=sp"
    s = load_settings({"PRIMER_MYSQL_URL": ONE, "PRIMER_REDIS_URL": url})
    assert s.cache.wait_replicas == 1  # the default with a sentinel URL
    assert s.celery.broker_url.startswith("redis+sentinel://:pw@s1:26379,s2:26380,s3/cache/3")
    assert "pw" not in repr(s) and "sp" not in repr(s)
    parsed = parse_sentinel_url(url, "X", [])
    assert parsed is not None
    assert parsed.sentinels == (("s1", 26379), ("s2", 26380), ("s3", 26379))
    assert (parsed.service, parsed.db, parsed.password) == ("cache", 2, "pw")
    broker, options = kombu_broker(s.celery.broker_url)
    assert broker == "sentinel://:pw@s1:26379/3;sentinel://:pw@s2:26380/3;sentinel://:pw@s3:26379/3"
    assert options == {"master_name": "cache", "sentinel_kwargs": {"password": "sp"}}


def test_wait_replicas_can_be_set_or_turned_off(tmp_path) -> None:  # type: ignore[no-untyped-def]
    toml = tmp_path / "c.toml"
    toml.write_text("[cache]\nwait_replicas = 0\nwait_timeout_ms = 50\n")
    url = "redis+sentinel://s1/cache"
    s = load_settings(
        {"PRIMER_MYSQL_URL": ONE, "PRIMER_REDIS_URL": url, "PRIMER_CONFIG": str(toml)}
    )
    assert (s.cache.wait_replicas, s.cache.wait_timeout_ms) == (0, 50)


def test_bad_sentinel_urls_are_named() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(
            {
                "PRIMER_MYSQL_URL": ONE,
                "PRIMER_REDIS_URL": "redis+sentinel://s1:x,s2/",
                "PRIMER_BROKER_URL": "redis+sentinel://s1/svc/db?bogus=1",
            }
        )
    text = str(err.value)
    assert "PRIMER_REDIS_URL 'redis+sentinel://s1:x,s2/': sentinel 's1:x' is not host:port" in text
    assert "names no service" in text
    assert "PRIMER_BROKER_URL" in text and "database 'db' is not a number" in text
    assert "unknown option 'bogus'" in text
