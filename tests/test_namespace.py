"""Only our keys: a key layout whose fixed head could take in other applications' keys is
refused at start (exit 2); with an accepted one, keys outside its namespace survive every kind
of sweep, and keys inside it that do not parse are deleted, named and counted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config import ConfigError, load_settings
from config.keyspace import namespace_problem
from config.query import Query
from tests.services import VENV_BIN, child_env, cli, wait_for
from tests.sidecar import Sidecar, isolated

GOOD = {"PRIMER_MYSQL_URL": "mysql://u:secret@db.example:3307/megamind"}
ONE_LETTER = "p:{cats}:{priority_threshold}:{enforcement_level}:{sort_by}:{limit}"


@pytest.mark.parametrize(
    "head, refused",
    [
        ("megamind:primer:primer:", False),
        ("primer:", False),
        ("app:", False),
        ("app/", False),
        ("p:", True),  # a letter: other applications' keys begin with it
        ("ab:", True),
        ("", True),
        ("megamind:primer", True),  # no separator: takes `megamind:primers:…` too
        ("megamind:primer:x", True),
    ],
)
def test_the_namespace_rule(head: str, refused: bool) -> None:
    assert (namespace_problem(head) is not None) == refused


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "layout.toml"
    path.write_text(text)
    return str(path)


def test_a_permissive_layout_is_refused_with_every_problem(tmp_path: Path) -> None:
    toml = write_toml(
        tmp_path,
        f"[cache]\nkey_prefix = ''\nkey_template = '{ONE_LETTER}'\nstate_prefix = 'pc'\n",
    )
    with pytest.raises(ConfigError) as err:
        load_settings({**GOOD, "PRIMER_CONFIG": toml})
    text = str(err.value)
    assert "the primer keys' fixed head 'p:'" in text and "too short" in text
    assert "cache.state_prefix 'pc' must end in a separator" in text


@pytest.mark.parametrize("command", [["listen"], ["status"], ["invalidate", "--all"], ["worker"]])
def test_a_permissive_layout_is_refused_at_start(tmp_path: Path, command: list[str]) -> None:
    toml = write_toml(tmp_path, f"[cache]\nkey_prefix = ''\nkey_template = '{ONE_LETTER}'\n")
    env = child_env({**GOOD, "PRIMER_CONFIG": toml})
    if command == ["worker"]:
        import subprocess

        done = subprocess.run(
            [str(VENV_BIN / "celery"), "-A", "tasks", "worker", "-c", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    else:
        done = cli(env, *command, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "fixed head 'p:'" in done.stderr and "Traceback" not in done.stderr


# ---- keys outside the namespace survive every kind of sweep ---------------------------------


@pytest.fixture(scope="module")
def sidecar(
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Sidecar]:
    workdir = tmp_path_factory.mktemp("namespace")
    with isolated(Sidecar, services, mysql_params, redis_client, workdir) as car:
        car.start_worker()
        car.start_listener()
        car.sync()
        yield car


def neighbours(car: Sidecar) -> list[str]:
    """Other applications' keys next to the namespace (all under the test's own tag, so the
    sidecar's stop() removes them): beside it, sharing its letters without the separator."""
    head = car.keys.head
    assert head == f"{car.tag}:megamind:primer:primer:"
    return [
        f"{car.tag}:megamind:session:42",
        f"{car.tag}:megamind:primer:session:42",
        f"{car.tag}:megamind:primer:primers:1",
        head[:-1],  # the head without its separator
        f"{car.tag}:megamind:primer:primer2:security:0.0:all:priority_desc:100",
        # the whole head inside another application's key: SCAN returns it, a sweep must not
        f"{car.tag}:copy:{head}security:0.0:all:priority_desc:100",
    ]


def plant(car: Sidecar) -> tuple[list[str], str]:
    """Other applications' keys, and one of ours that does not parse, planted once the
    pipeline is idle (sync() returns when the fast lane deleted the sentinel: its batch's
    sweep may still be coming; the checkpoint passes it only once it is done)."""
    car.sync()
    car.checkpointed()
    outside = neighbours(car)
    garbage = f"{car.keys.head}not-a-cache-key"  # inside the namespace: ours, deleted
    for key in [*outside, garbage]:
        car.redis.set(key, b"theirs")
    return outside, garbage


def unparseable_count(car: Sidecar) -> int:
    from tasks.work.metrics import stats_key

    return int(car.redis.hget(stats_key(car.state_prefix), "keys_unparseable") or 0)


def test_keys_outside_the_namespace_survive_a_listener_batch(sidecar: Sidecar) -> None:
    outside, garbage = plant(sidecar)
    before = unparseable_count(sidecar)
    (doomed,) = sidecar.plant(Query(("security",)))
    sidecar.insert_chunk("ns-batch", "security", "0.50", "required")
    sidecar.sync()
    assert sidecar.present([doomed, garbage]) == set()  # the sweep ran, the garbage went
    assert sidecar.present(outside) == set(outside)
    wait_for(lambda: unparseable_count(sidecar) > before, what="the unparseable key counted")
    assert sidecar.worker is not None
    wait_for(
        lambda: repr(garbage) in sidecar.worker.output(),
        what="the worker log to name the unparseable key",
    )


@pytest.mark.parametrize(
    "args",
    [("--category", "security"), ("--element", "ns-element"), ("--all",)],
    ids=["category", "element", "all"],
)
def test_keys_outside_the_namespace_survive_invalidate(
    sidecar: Sidecar, args: tuple[str, ...]
) -> None:
    if args[0] == "--element" and sidecar.image("ns-element") is None:
        sidecar.insert_chunk("ns-element", "security", "0.50", "required")
        sidecar.sync()
    outside, garbage = plant(sidecar)
    (doomed,) = sidecar.plant(Query(("security",)))
    before = unparseable_count(sidecar)
    done = sidecar.cli("invalidate", *args)
    assert done.returncode == 0, done.stderr
    assert sidecar.present([doomed, garbage]) == set()
    assert sidecar.present(outside) == set(outside)
    assert repr(garbage) in done.stderr  # named in the log line
    assert unparseable_count(sidecar) == before + 1
    status = sidecar.cli("status")
    assert f"unparseable: {before + 1} keys" in status.stdout
