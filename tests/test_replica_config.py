"""Read-replica settings: PRIMER_REPLICA_URLS and [replicas]; every bad value named."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config import ConfigError, load_settings
from core.backoff import doubling

GOOD = {"PRIMER_MYSQL_URL": "mysql://u:secret@db.example:3307/megamind"}


def test_no_replicas_by_default() -> None:
    s = load_settings(GOOD)
    assert not s.replicas and s.replicas.urls == () and s.replicas.max_wait_s == 10.0


def test_urls_from_the_environment() -> None:
    s = load_settings(
        {**GOOD, "PRIMER_REPLICA_URLS": "mysql://r:pw@db-replica-1:3306, mysql://db-replica-2/m,"}
    )
    assert [(r.host, r.port, r.user, r.database) for r in s.replicas.urls] == [
        ("db-replica-1", 3306, "r", ""),
        ("db-replica-2", 3306, "root", "m"),
    ]
    assert "pw" not in repr(s.replicas)


def test_urls_and_wait_from_toml_and_the_environment_wins(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[replicas]\nurls = ["mysql://a:3306", "mysql://b:3306"]\nmax_wait_s = 2.5\n')
    s = load_settings({**GOOD, "PRIMER_CONFIG": str(toml)})
    assert [r.host for r in s.replicas.urls] == ["a", "b"] and s.replicas.max_wait_s == 2.5
    s = load_settings({**GOOD, "PRIMER_CONFIG": str(toml), "PRIMER_REPLICA_URLS": "mysql://c"})
    assert [r.host for r in s.replicas.urls] == ["c"] and s.replicas.max_wait_s == 2.5


def test_every_bad_replica_setting_is_named(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[replicas]\nurls = 'mysql://a'\nmax_wait_s = -1\nwait = 3\n")
    with pytest.raises(ConfigError) as err:
        load_settings({**GOOD, "PRIMER_CONFIG": str(toml)})
    text = str(err.value)
    for needle in ("replicas.urls = 'mysql://a'", "replicas.max_wait_s = -1", "replicas.wait"):
        assert needle in text, needle
    with pytest.raises(ConfigError) as err:
        load_settings(
            {
                **GOOD,
                "PRIMER_REPLICA_URLS": "http://x, mysql://u:secret@db.example:3307, "
                "mysql://r:1, mysql://r:1, mysql://:pw@/",
            }
        )
    text = str(err.value)
    assert "PRIMER_REPLICA_URLS[0] 'http://x': scheme must be mysql://" in text
    assert "PRIMER_REPLICA_URLS[1]" in text and "is the primary itself" in text
    assert "PRIMER_REPLICA_URLS[3]" in text and "listed twice" in text
    assert "PRIMER_REPLICA_URLS[4]" in text and "names no host" in text
    assert "secret" not in text and ":pw@" not in text


def test_the_wait_must_end_before_the_listener_redelivers(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[replicas]\nmax_wait_s = 30\n[listener]\nredeliver_after_s = 30\n")
    env = {**GOOD, "PRIMER_CONFIG": str(toml)}
    assert load_settings(env).replicas.max_wait_s == 30  # no replicas: no wait
    with pytest.raises(ConfigError, match="max_wait_s = 30 must be below"):
        load_settings({**env, "PRIMER_REPLICA_URLS": "mysql://r"})


@given(
    st.integers(min_value=1, max_value=10_000),
    st.floats(min_value=0.001, max_value=10),
    st.floats(min_value=0.001, max_value=600),
)
def test_followup_polls_back_off_to_a_cap(attempt: int, first: float, cap: float) -> None:
    delay = doubling(attempt, first, cap)
    assert 0 < delay <= cap
    assert doubling(attempt + 1, first, cap) >= delay
    assert doubling(1, first, cap) == min(first, cap)
