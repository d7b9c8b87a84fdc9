"""Several workers: invalidation batches run concurrently and out of order, and the cache ends
exact all the same.

Why order cannot matter: a batch's whole effect on the cache is deleting D(b), the keys its
row images affect (judged from the key text and the images alone, never from the cache's or
another batch's state). Deletions are idempotent and commute, so after any set of batches, run
in any order, interleaved, on any worker, or twice (redelivery), the cache holds exactly
K - union(D(b)). A fill that read the database before a commit is undone by that commit's own
batch whenever it runs (lease revocation, or the delete), whatever ran before it; and the
listener's checkpoint only passes batches that are done, never the highest one published.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from config.query import Query
from config.settings import DEFAULT_KEY_TEMPLATE
from core.keys import KeyFilter, KeyFormat
from core.predicate import ChangeIndex, ElementImage, matches
from tasks.work.sweep import sweep
from tests.services import delete_prefix, unique, wait_for
from tests.sidecar import Sidecar, isolated
from tests.strategies import images as image_strategy
from tests.workload import CATEGORIES, LEVELS, random_query


@pytest.fixture(scope="module")
def two_workers(
    services: dict[str, str],
    mysql_params: dict,
    redis_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Sidecar]:
    workdir = tmp_path_factory.mktemp("workers")
    with isolated(Sidecar, services, mysql_params, redis_client, workdir) as car:
        car.start_worker(name=f"{car.tag}-a")
        car.start_worker(name=f"{car.tag}-b")
        car.start_listener()
        car.sync()
        yield car


def test_two_workers_on_the_same_queues_delete_exactly_the_affected_keys(
    two_workers: Sidecar,
) -> None:
    car, rng = two_workers, random.Random(7)
    images: list[ElementImage] = []

    def record(chunk_id: str) -> None:
        image = car.image(chunk_id)
        if image is not None:
            images.append(image)

    ids = [f"w-{i}" for i in range(30)]
    for chunk_id in ids:
        car.insert_chunk(chunk_id, rng.choice(CATEGORIES), "0.50", rng.choice(LEVELS))
        record(chunk_id)  # its batch may still be running when the keys are planted
    queries = list({random_query(rng) for _ in range(300)})
    keys = car.plant(*queries)
    for _ in range(60):  # one statement each: many small batches for both workers
        target, column, value = (
            rng.choice(ids),
            *rng.choice(
                [
                    ("element_category", rng.choice(CATEGORIES)),
                    ("priority_score", f"{rng.randint(0, 100) / 100:.2f}"),
                    ("enforcement_level", rng.choice(LEVELS)),
                ]
            ),
        )
        before = car.image(target)
        sql = f"UPDATE megamind_chunks SET {column} = %s WHERE chunk_id = %s"
        if car.execute(sql, (value, target)):  # a no-op UPDATE writes no row event
            images.extend(image for image in (before, car.image(target)) if image)

    def affected(query: Query) -> bool:
        return any(matches(image, KeyFilter.of(query)) for image in images)

    expected_gone = {k for k, query in zip(keys, queries, strict=True) if affected(query)}
    # Every batch done (the checkpoint passes a batch only once it is swept, both passes):
    # nothing still running can delete a key after it is counted.
    car.checkpointed(timeout=60)
    left = car.present(keys)
    assert not (left & expected_gone), "affected keys survived"  # completeness
    assert left == set(keys) - expected_gone, "unaffected keys were deleted"  # precision
    assert 0 < len(expected_gone) < len(keys)
    workers = [p for p in car.processes if "worker" in p.log.name]
    wait_for(  # both took batches (the pool child's log line may trail the deletion)
        lambda: all(
            "primer_cache.invalidate" in w.output() and "succeeded" in w.output() for w in workers
        ),
        timeout=30,
        what="both workers to have run invalidations",
    )


@settings(max_examples=15)
@given(
    batches=st.lists(st.frozensets(image_strategy, min_size=1, max_size=3), min_size=2, max_size=6),
    order_seed=st.randoms(use_true_random=False),
)
def test_batches_in_any_order_leave_the_same_cache(
    redis_client: redis.Redis, batches: list[frozenset[ElementImage]], order_seed: random.Random
) -> None:
    """The argument above, run: batches swept in a random order against a real Redis leave
    exactly the keys no batch affects."""
    keys = KeyFormat(unique("ooo") + ":megamind:primer:", DEFAULT_KEY_TEMPLATE)
    rng = random.Random(11)
    queries = list({random_query(rng) for _ in range(120)})
    names = [keys.build(q) for q in queries]
    try:
        pipe = redis_client.pipeline(transaction=False)
        for name in names:
            pipe.set(name, b"x")
        pipe.execute()
        order = list(batches)
        order_seed.shuffle(order)
        for batch in order:
            sweep(redis_client, keys, ChangeIndex(batch).affects)
        survivors = {
            name
            for name, q in zip(names, queries, strict=True)
            if not any(matches(image, KeyFilter.of(q)) for batch in batches for image in batch)
        }
        left = {k.decode() for k in redis_client.scan_iter(match=keys.scan_pattern(), count=1000)}
        assert left == survivors
    finally:
        delete_prefix(redis_client, keys.head)
