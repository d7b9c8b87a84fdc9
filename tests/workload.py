"""Random changes against a model, for the fault tests: which planted keys must go (a change
could have altered them), which must stay, and how long the pipeline took to get there."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from config.query import Query
from core.keys import KeyFilter
from core.predicate import ElementImage, matches
from tests.services import wait_for
from tests.sidecar import PLANTED, Sidecar

CATEGORIES = ["security", "development", "process", "cyber_security", "testing", None]
LEVELS = ["required", "recommended", "optional", None]


def random_query(rng: random.Random) -> Query:
    cats = rng.sample([c for c in CATEGORIES if c], rng.choice([0, 1, 1, 1, 2, 3]))
    return Query(
        tuple(cats),
        rng.choice([0.0, 0.3, 0.5, 0.8, 0.95]),
        rng.choice(["all", "required", "recommended", "optional"]),
        limit=rng.choice([10, 50, 100]),
    )


@dataclass
class Outcome:
    """How a fault ended: seconds from the servers being back to every affected key gone and
    the checkpoint caught up (every batch done), and the completeness and precision then."""

    fault: str
    caught_up_s: float
    gone: int
    affected: int
    kept: int
    unaffected: int

    def __str__(self) -> str:
        return (
            f"FAULT {self.fault}: caught up {self.caught_up_s:.1f} s after recovery; "
            f"complete {self.gone}/{self.affected} affected keys gone; "
            f"precise {self.kept}/{self.unaffected} unaffected keys kept"
        )


@dataclass
class Workload:
    car: Sidecar
    rng: random.Random
    chunks: int = 30
    live: list[str] = field(default_factory=list)
    images: list[ElementImage | None] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    queries: list[Query] = field(default_factory=list)
    changes: int = 0

    def seed(self) -> None:
        """Insert the chunks, wait for the pipeline, plant the keys."""
        for i in range(self.chunks):
            chunk_id = f"w-{self.car.tag}-{i}"
            self.car.insert_chunk(
                chunk_id,
                self.rng.choice(CATEGORIES),
                f"{self.rng.randint(0, 100) / 100:.2f}",
                self.rng.choice(LEVELS),
                self.rng.choice(["GLOBAL"] * 4 + ["PROJECT"]),
                title=f"T {chunk_id}" if self.rng.random() < 0.5 else None,
            )
            self.live.append(chunk_id)
        self.car.sync()  # its sentinel changed before the keys exist: not part of the model
        # Every pass of every batch so far done (the cold-start flush's second pass too):
        # nothing that ran before the keys existed may delete them.
        self.car.checkpointed()
        self.plant(400)

    def plant(self, count: int) -> None:
        """Plant `count` random keys (planted after every change so far: none affected yet)."""
        queries = list({random_query(self.rng) for _ in range(count)} - set(self.queries))
        self.queries += queries
        self.keys += self.car.plant(*queries)

    def _record(self, chunk_id: str) -> None:
        # None (outside realm GLOBAL) is kept too, so that undoing a record is a pop
        self.images.append(self.car.image(chunk_id))

    def change(self) -> None:
        """One random change; the images before and after join the model."""
        rng, car = self.rng, self.car
        self.changes += 1
        op = rng.choice(
            ["create", "category", "priority", "level", "content", "realm"] * 2
            + ["delete", "title", "bump"]
        )
        if op == "create" or len(self.live) < 5:
            new_id = f"w-{car.tag}-n{self.changes}"
            car.insert_chunk(new_id, rng.choice(CATEGORIES), "0.75", rng.choice(LEVELS))
            self.live.append(new_id)
            self._record(new_id)
            return
        target = rng.choice(self.live)
        if op != "bump":  # a read bump changes nothing a key shows
            self._record(target)
        if op == "delete":
            car.execute("DELETE FROM megamind_chunks WHERE chunk_id = %s", (target,))
            self.live.remove(target)
        elif op == "title":
            with car.conn.cursor() as cur:
                if not cur.execute(
                    "UPDATE megamind_global_elements SET title = %s WHERE chunk_id = %s",
                    (f"title {rng.random()}", target),
                ):
                    self.images.pop()  # the chunk has no metadata row: nothing changed
        elif op == "bump":  # the primer server's read bump: affects nothing
            car.execute(
                "UPDATE megamind_chunks SET access_count = access_count + 1 WHERE chunk_id = %s",
                (target,),
            )
        else:
            column, value = {
                "category": ("element_category", rng.choice(CATEGORIES)),
                "priority": ("priority_score", f"{rng.randint(0, 100) / 100:.2f}"),
                "level": ("enforcement_level", rng.choice(LEVELS)),
                "content": ("content", f"content {rng.random()}"),
                "realm": ("realm_id", rng.choice(["GLOBAL", "PROJECT"])),
            }[op]
            with car.conn.cursor() as cur:
                changed = cur.execute(
                    f"UPDATE megamind_chunks SET {column} = %s WHERE chunk_id = %s",
                    (value, target),
                )
            if changed:
                self._record(target)
            else:  # the same value again: no row event, no change to any key
                self.images.pop()

    def affected(self) -> set[str]:
        filters = [KeyFilter.of(q) for q in self.queries]
        return {
            key
            for key, key_filter in zip(self.keys, filters, strict=True)
            if any(image is not None and matches(image, key_filter) for image in self.images)
        }

    def stale(self, keys: list[str]) -> set[str]:
        """The keys that still hold the value planted before the changes (deleted or
        refreshed ones do not)."""
        pipe = self.car.redis.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return {key for key, value in zip(keys, pipe.execute(), strict=True) if value == PLANTED}

    def _matching(self, key: str) -> list[ElementImage]:
        parsed = self.car.keys.parse(key)
        assert parsed is not None
        return [im for im in self.images if im is not None and matches(im, parsed.filter)]

    def wait_complete(
        self, fault: str, since: float, timeout: float, *, precise: bool = True
    ) -> Outcome:
        """Wait until every affected key is gone (at most `timeout` s); then check that every
        unaffected key is still there (unless a flush was the right answer: `precise`).
        `since`: when the servers were back (monotonic)."""
        affected = self.affected()
        doomed = sorted(affected)
        try:
            wait_for(lambda: not self.stale(doomed), timeout=timeout, interval=0.1)
        except AssertionError:
            left = sorted(self.stale(doomed))
            why = {key: self._matching(key) for key in left[:5]}
            raise AssertionError(
                f"{fault}: {len(left)} of the {len(doomed)} keys affected by {self.changes} "
                f"changes survived {timeout} s; e.g. (key: images that affect it) {why}"
            ) from None
        self.car.checkpointed(timeout)  # and every batch done: nothing left to replay
        caught_up = time.monotonic() - since
        unaffected = [key for key in self.keys if key not in affected]
        kept = self.car.present(unaffected)
        # Counted now, once every batch is done: a key the wait saw go and that came back with
        # its planted (pre-change) value would be a stale key, and not gone.
        gone = len(doomed) - len(self.stale(doomed))
        outcome = Outcome(fault, caught_up, gone, len(doomed), len(kept), len(unaffected))
        print(outcome)
        assert 0 < len(doomed) < len(self.keys)  # the run exercised both sides
        if precise:
            assert kept == set(unaffected), f"{len(unaffected) - len(kept)} unaffected keys gone"
        return outcome
