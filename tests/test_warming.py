"""Warming against real MariaDB, Redis and Celery: values equal fresh queries, changes re-warm,
the stale-set race is closed (and shown open without the guard), duplicates collapse."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config.query import SEED_WARM_PATTERNS, Query
from core.batch import Batch
from core.predicate import ChangeIndex, ElementImage
from tests.services import VENV_BIN, delete_prefix, wait_for
from tests.warm_fixtures import (
    WarmEnv,
    Writers,
    cached,
    fresh,
    random_query,
    same,
    seed_elements,
    warm_env,
)

# isort: split
# After warm_fixtures: tasks.app reads its settings from os.environ on first use.
from tasks.warming import enqueue_warms
from tasks.work.passes import queue_second_pass
from tasks.work.warming import after_invalidation, warm_query

SECURITY_REQUIRED = Query(("security",), enforcement_level="required")
AD_HOC = Query(("security",), priority_threshold=0.3, limit=40)  # not a configured pattern


@pytest.fixture(scope="module")
def static(
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WarmEnv]:
    """Data and a cache, no processes: in-process warms against a database that holds still."""
    workdir = tmp_path_factory.mktemp("warm-static")
    with warm_env(services, mysql_params, redis_client, workdir) as env:
        seed_elements(env.conn, 400, random.Random(7))
        yield env


@pytest.fixture(scope="module")
def pipeline(
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WarmEnv]:
    """Data, a Celery worker and a listener; the listener's cold start warms every pattern."""
    workdir = tmp_path_factory.mktemp("warm-pipeline")
    with warm_env(services, mysql_params, redis_client, workdir) as env:
        seed_elements(env.conn, 300, random.Random(11))
        env.start_worker()
        env.start_listener()
        wait_for(
            lambda: all(cached(env, q) for q in SEED_WARM_PATTERNS),
            timeout=30,
            what="the cold start warming every seed pattern",
        )
        yield env


def settle(env: WarmEnv, timeout: float = 60.0) -> None:
    """Wait until the queues are empty and every seed key equals a fresh query."""
    wait_for(
        lambda: (
            env.queued() == 0
            and all(same(cached(env, q), fresh(env, q)) for q in SEED_WARM_PATTERNS)
        ),
        timeout=timeout,
        interval=0.1,
        what="queues drained and warm keys equal to fresh queries",
    )


# ---- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize("query", SEED_WARM_PATTERNS, ids=lambda q: "_".join(q.categories))
def test_warmed_value_is_the_fresh_response(static: WarmEnv, query: Query) -> None:
    result = warm_query(static.rt, query)
    assert result.status == "warmed"
    assert result.rows and result.rows == len(fresh(static, query)["global_elements"])
    value = cached(static, query)
    assert value is not None
    expected = fresh(static, query)
    assert value.pop("retrieved_at") and expected.pop("retrieved_at")
    assert value == expected
    assert 0 < static.cache.ttl(static.keys.build(query)) <= static.settings.cache.ttl_seconds


def test_random_patterns_are_the_fresh_response(static: WarmEnv) -> None:
    rng = random.Random(2024)
    for _ in range(40):
        query = random_query(rng)
        assert warm_query(static.rt, query).status == "warmed", query
        assert same(cached(static, query), fresh(static, query)), query


def test_duplicate_warms_collapse_and_the_holder_runs_again(static: WarmEnv) -> None:
    query = Query(("process",), limit=7)
    inner: list[str] = []

    def during_first_run(run: int) -> None:
        if run == 1:
            inner.append(warm_query(static.rt, query).status)

    result = warm_query(static.rt, query, before_write=during_first_run)
    assert inner == ["collapsed"]
    assert result.status == "warmed"
    # the collapsed request was served by a second run of the holder, then the lock was freed
    assert warm_query(static.rt, query).status == "warmed"


def test_after_invalidation_warms_exactly_the_affected_patterns(
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    # No worker: the messages stay in this environment's queues for us to read.
    with warm_env(services, mysql_params, redis_client, tmp_path, second_pass_ms=250) as env:
        image = ElementImage("process", None, "required")
        after_invalidation(env.rt, ChangeIndex([image]))
        warms = env.messages("warm")
        assert [Query.from_params(m["args"][0]) for m in warms] == [SEED_WARM_PATTERNS[2]]
        env.broker.delete(f"{env.tag}.warm")
        after_invalidation(env.rt, None)
        assert len(env.messages("warm")) == len(SEED_WARM_PATTERNS)  # a flush warms them all
        assert env.messages("invalidate") == []  # the second pass is the invalidate task's


def test_second_pass_is_queued_with_its_delay(
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    with warm_env(services, mysql_params, redis_client, tmp_path, second_pass_ms=250) as env:
        image = ElementImage("process", None, "required")
        batch = Batch.of([image], upto="0-1-42", term="t", seq=3)
        assert queue_second_pass(env.rt, batch)
        (second,) = env.messages("invalidate")
        assert second["eta"] and Batch.from_json(second["args"][0]) == Batch.of(
            [image], upto="0-1-42", term="t", seq=3, second_pass=True
        )


# ---- the pipeline -----------------------------------------------------------------------------


def test_a_change_rewarms_its_pattern(pipeline: WarmEnv) -> None:
    settle(pipeline)
    (first, *_) = fresh(pipeline, SECURITY_REQUIRED)["global_elements"]
    text = f"changed {random.random()}"
    with pipeline.conn.cursor() as cur:
        cur.execute(
            "UPDATE megamind_chunks SET content = %s WHERE chunk_id = %s",
            (text, first["element_id"]),
        )

    def rewarmed() -> bool:
        value = cached(pipeline, SECURITY_REQUIRED)
        return value is not None and value["global_elements"][0]["content"] == text

    wait_for(rewarmed, timeout=20, what="the key to hold the new content")
    assert same(cached(pipeline, SECURITY_REQUIRED), fresh(pipeline, SECURITY_REQUIRED))


@pytest.mark.parametrize(
    ("query", "guard"),
    [(AD_HOC, True), (AD_HOC, False), (SECURITY_REQUIRED, True)],
    ids=["ad-hoc-guarded", "ad-hoc-unguarded", "configured-guarded"],
)
def test_stale_set_race(pipeline: WarmEnv, query: Query, guard: bool) -> None:
    """A warm SELECTs, a commit lands and its invalidation runs to the end, then the warm
    writes. Guarded, the write aborts and the warm runs again; unguarded, it is stale."""
    settle(pipeline)
    pipeline.cache.delete(pipeline.keys.build(query))
    before = fresh(pipeline, query)
    target = before["global_elements"][0]["element_id"]
    runs: list[int] = []

    def commit_and_wait_for_invalidation(run: int) -> None:
        runs.append(run)
        if run != 1:
            return
        sweeps = pipeline.sweeps()
        with pipeline.conn.cursor() as cur:
            cur.execute(
                "UPDATE megamind_chunks SET content = %s WHERE chunk_id = %s",
                (f"race {random.random()}", target),
            )
        wait_for(
            lambda: pipeline.sweeps() > sweeps,
            timeout=20,
            what="the commit's invalidation to finish its sweep (revoking the warm's lease)",
        )

    result = warm_query(
        pipeline.rt, query, guard=guard, before_write=commit_and_wait_for_invalidation
    )
    assert result.status == "warmed"
    after = fresh(pipeline, query)
    assert not same(before, after)
    if guard:
        assert runs[:2] == [1, 2]  # the first write aborted
        wait_for(lambda: same(cached(pipeline, query), fresh(pipeline, query)), timeout=20)
    else:
        assert runs == [1]
        assert same(cached(pipeline, query), before)  # the stale set happened
        assert not same(cached(pipeline, query), after)
        pipeline.cache.delete(pipeline.keys.build(query))


def test_concurrent_writers_converge(pipeline: WarmEnv, mysql_params: dict) -> None:
    settle(pipeline)
    ids = [
        e["element_id"]
        for q in SEED_WARM_PATTERNS
        for e in fresh(pipeline, q)["global_elements"][:15]
    ]
    # Warms requested all through the writes, so that many of them overlap a commit.
    done = threading.Event()

    def keep_warming() -> None:
        while not done.is_set():
            enqueue_warms(pipeline.rt, SEED_WARM_PATTERNS)
            done.wait(0.005)

    warmer = threading.Thread(target=keep_warming)
    warmer.start()
    try:
        Writers(mysql_params, pipeline.database, ids).run(threads=3, count=60, seed=99)
    finally:
        done.set()
        warmer.join()
    settle(pipeline, timeout=90)
    for query in SEED_WARM_PATTERNS:
        assert same(cached(pipeline, query), fresh(pipeline, query)), query
    result = pipeline.cli("check", "--json")
    assert result.returncode == 0, result.stdout + result.stderr


def test_warm_all_prints_the_seed_keys(pipeline: WarmEnv) -> None:
    settle(pipeline)
    result = pipeline.cli("warm", "--all", "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    for query in SEED_WARM_PATTERNS:
        assert pipeline.keys.build(query) in result.stdout
    one = pipeline.cli("warm", "--categories", "testing", "--priority", "0.5", "--limit", "5")
    assert one.returncode == 0, one.stdout + one.stderr
    key = pipeline.keys.build(Query(("testing",), 0.5, limit=5))
    assert key in one.stdout and " rows " in one.stdout
    assert same(
        cached(pipeline, Query(("testing",), 0.5, limit=5)),
        fresh(pipeline, Query(("testing",), 0.5, limit=5)),
    )


# ---- operators ------------------------------------------------------------------------------


def test_check_reports_a_stale_key(static: WarmEnv) -> None:
    query = Query(("testing",), limit=3)
    warm_query(static.rt, query)
    ok = static.cli("check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    top = fresh(static, query)["global_elements"][0]["element_id"]
    with static.conn.cursor() as cur:  # no listener here: the cached value goes stale
        cur.execute("UPDATE megamind_chunks SET content = 'edited' WHERE chunk_id = %s", (top,))
    stale = static.cli("check")
    assert stale.returncode == 1
    assert f"stale: {static.keys.build(query)}" in stale.stdout
    static.cache.delete(static.keys.build(query))


def test_check_knows_categories_containing_underscores(static: WarmEnv) -> None:
    # The key text "x_y" is also the key of ("x", "y"): check must query ("x_y",).
    query = Query(("x_y",))
    delete_prefix(static.cache, static.key_prefix)  # earlier tests leave stale keys behind
    with static.conn.cursor() as cur:
        cur.execute(
            "INSERT INTO megamind_chunks (chunk_id, realm_id, content, element_category, "
            "priority_score) VALUES ('underscored', 'GLOBAL', 'x', 'x_y', 0.5)"
        )
    try:
        warm_query(static.rt, query)
        assert fresh(static, query)["total_count"] == 1
        done = static.cli("check")
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        static.cache.delete(static.keys.build(query))
        with static.conn.cursor() as cur:
            cur.execute("DELETE FROM megamind_chunks WHERE chunk_id = 'underscored'")


BAD_PATTERNS = """
[[warm.patterns]]
include_categories = ["security"]
enforcement_level = "mandatory"
[[warm.patterns]]
include_categories = ["process"]
limit = -5
[[warm.patterns]]
priority_threshold = 1.5
"""


@pytest.mark.parametrize("command", [["status"], ["listen"]])
def test_bad_warm_patterns_exit_2_naming_each(
    services: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    from tests.services import child_env, cli

    config = tmp_path / "bad.toml"
    config.write_text(BAD_PATTERNS)
    result = cli(child_env(services, PRIMER_CONFIG=str(config)), *command, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "'mandatory'" in result.stderr
    assert "limit -5" in result.stderr
    assert "priority_threshold 1.5" in result.stderr
    assert "warm.patterns[0]" in result.stderr and "warm.patterns[2]" in result.stderr


def test_worker_with_bad_warm_patterns_exits_2(services: dict[str, str], tmp_path: Path) -> None:
    import subprocess

    from tests.services import child_env

    config = tmp_path / "bad.toml"
    config.write_text(BAD_PATTERNS)
    result = subprocess.run(
        [str(VENV_BIN / "celery"), "-A", "tasks", "worker", "-Q", "nothing"],
        env=child_env(services, PRIMER_CONFIG=str(config)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "'mandatory'" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--categories", "security", "--enforcement", "mandatory"], "'mandatory'"),
        (["--categories", "security", "--limit", "-1"], "limit -1"),
        (["--priority", "1.5"], "priority_threshold 1.5"),
        (["--priority", "-0.1"], "priority_threshold -0.1"),
        (["--all", "--categories", "security"], "--categories"),
        ([], "--all"),
        (["--categories", "a*b"], "'a*b'"),
        (["--all", "--timeout", "0"], "--timeout"),
        (["--priority", "high"], "'high'"),
    ],
)
def test_operator_bad_arguments_exit_2(
    services: dict[str, str], args: list[str], named: str
) -> None:
    from tests.services import child_env, cli

    result = cli(child_env(services), "warm", *args, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert named in result.stderr
