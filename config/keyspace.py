"""The keys the sidecar owns: the primer keys' fixed head and the state prefix must each be a
namespace of its own, apart from each other and from the lease keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The lease keys' prefix is fixed (the function library is one per Redis server) and belongs
# to the primer server's client library, the wire contract's one owner.
from primer_cache_client.keys import DEFAULT_KEY_PREFIX, DEFAULT_KEY_TEMPLATE, LEASE_PREFIX

from config.groups import DEFAULT_STATE_PREFIX

# A namespace of our own (namespace_problem): ends in one of these, after this many characters.
SEPARATORS = (":", "/", "|")
NAMESPACE_MIN = 3


def namespace_problem(head: str) -> str | None:
    """Why `head` cannot be a namespace of the sidecar's own (None: it can).

    Every key under the primer keys' fixed head is the sidecar's: a sweep deletes what does
    not parse there (safe side). So the head must be a namespace no other application
    writes under: it ends in a separator (`primer:` takes `primer:x`, never `primers:x`),
    with at least NAMESPACE_MIN characters before it (not a letter or two that other
    applications' keys begin with). docs/failures.md says the same to operators.
    """
    if not head or head[-1] not in SEPARATORS:
        return f"must end in a separator ({' or '.join(repr(c) for c in SEPARATORS)})"
    if len(head) - 1 < NAMESPACE_MIN:
        return f"is too short: at least {NAMESPACE_MIN} characters before the final separator"
    return None


def check_key_layout(cache: Mapping[str, Any], problems: list[str]) -> None:
    """Append what is wrong with the [cache] section's key prefix, template and state prefix
    taken together (each value alone was checked already)."""
    prefix = cache.get("key_prefix", DEFAULT_KEY_PREFIX)
    template = cache.get("key_template", DEFAULT_KEY_TEMPLATE)
    state = cache.get("state_prefix", DEFAULT_STATE_PREFIX)
    if not (isinstance(prefix, str) and isinstance(template, str) and isinstance(state, str)):
        return
    head = prefix + template.split("{", 1)[0]
    problem = namespace_problem(head)
    if problem:
        problems.append(
            f"the primer keys' fixed head {head!r} (cache.key_prefix + the start of "
            f"cache.key_template) {problem}: sweeps delete every key under it"
        )
    _check_state_prefix(state, head, problems)
    if head.startswith(LEASE_PREFIX) or LEASE_PREFIX.startswith(head):
        problems.append(
            f"the primer keys' prefix {head!r} overlaps the lease keys' {LEASE_PREFIX!r}"
        )


def _check_state_prefix(state: str, head: str, problems: list[str]) -> None:
    if not state:
        problems.append("cache.state_prefix must not be empty")
    elif namespace_problem(state):
        problems.append(f"cache.state_prefix {state!r} {namespace_problem(state)}")
    elif "{" in state or "}" in state:
        # Redis Cluster hash tags: each state key takes its tag from what it guards (a cache
        # key, the listener); a brace in the prefix would pull them all into one slot.
        problems.append(f"cache.state_prefix {state!r} must not contain '{{' or '}}'")
    elif state.startswith(head) or head.startswith(state):
        problems.append(
            f"cache.state_prefix {state!r} overlaps the primer keys' prefix {head!r}: "
            "sweeps would delete the sidecar's own state"
        )
