"""The Redis function library `primer_cache` (Lua): read-through leases for the primer server.

The contract with the primer server (this package's PrimerCache speaks it; README):

    FCALL primer_cache_read 1 <key> <lease_ms>
        -> {"hit", value} | {"lease", token} | {"busy", ms_left}
    FCALL primer_cache_fill 1 <key> <token> <value> <ttl_s>
        -> 1 written | 0 refused (the lease was revoked by an invalidation, or ran out)

and, for the sidecar's own warms and refreshes,

    FCALL primer_cache_warm_lease 1 <key> <lease_ms>
        -> {"lease", token} always (even when the key is present or another lease is out,
           which it takes over), or {"busy", 0} for an unleasable key
    FCALL primer_cache_release 1 <key> <token>
        -> 1 released (readers may take a lease again) | 0 the token no longer stands
    FCALL primer_cache_invalidate <n> <key>... <IDLETIME|FREQ> <bound> <hold_ms>
        -> per key: deleted (0|1), lease revoked (0|1), OBJECT answer (-1: absent), token
        Deletes each key and revokes its lease, atomically with taking the lease on the hot
        ones (OBJECT IDLETIME <= bound, or FREQ >= bound; or a lease stood: a fill was in
        progress or landed lately) for `hold_ms`: readers are told `busy` from the moment the
        key is gone until the refresh fills it, with no gap in which one misses. The keys
        must share one slot on a cluster.

The lease on <key> is a hash at `primer-cache:lease:{T}<key>` (keys.lease_key: T is the
key's hash tag, so it shares the key's slot): field `token` while a fill is due, field `n` a
counter that keeps tokens unique. Invalidation revokes a lease by deleting that hash (the sweep
finds it with the same SCAN that finds the cache keys). A fill that lands removes `token` but
leaves the hash for FILLED_GRACE_MS, so a sweep that was already running when the fill landed
still finds it (SCAN returns every key present from its start to its end) and deletes the new
value too. A key whose lease name cannot share its slot answers busy 0: read the database,
do not fill (safe side).

Flags (issue 22 item 6). A function registered without flags may write and is refused once a
`noeviction` Redis reaches `maxmemory`: every read would miss and every invalidation fail.
`no-writes` fits none of them (a read that misses writes its lease), so:
- primer_cache_read: `allow-oom`. A hit writes nothing; a miss writes one small lease hash that
  expires within lease_ms (bounded overshoot). Its fill is then refused at OOM (fill keeps the
  default flags: a full noeviction Redis takes no new values), and the client releases the lease.
- primer_cache_release: `allow-oom`; it only deletes (HDEL).
- primer_cache_invalidate: `allow-oom`; it deletes the keys. A hot key's hold writes a lease
  hash, far smaller than the value it deletes.
- primer_cache_fill, primer_cache_warm_lease: default (may write, refused at OOM).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from primer_cache_client.keys import LEASE_PREFIX

LIBRARY_NAME = "primer_cache"
READ = "primer_cache_read"
FILL = "primer_cache_fill"
WARM_LEASE = "primer_cache_warm_lease"
RELEASE = "primer_cache_release"
INVALIDATE = "primer_cache_invalidate"

# Longer than any sweep takes (about 1.5 s per million keys): see the module docstring.
FILLED_GRACE_MS = 60_000

LIBRARY = f"""#!lua name={LIBRARY_NAME}

-- The lease name: kept in step with keys.py (tests hold both to one spec).
local LEASE_PREFIX = '{LEASE_PREFIX}'
local FILLED_GRACE_MS = {FILLED_GRACE_MS}

local function slot_text(key)
  local open = string.find(key, '{{', 1, true)
  if open then
    local close = string.find(key, '}}', open + 1, true)
    if close and close > open + 1 then
      return string.sub(key, open + 1, close - 1)
    end
  end
  return key
end

local function lease_key(key)
  local text = slot_text(key)
  if text == '' or string.find(text, '}}', 1, true) then
    return nil
  end
  return LEASE_PREFIX .. '{{' .. text .. '}}' .. key
end

local function positive(value)
  local n = tonumber(value)
  if n and n >= 1 and n == math.floor(n) then
    return n
  end
  return nil
end

local function bad(fn, name, value)
  return redis.error_reply(fn .. ': ' .. name .. ' ' .. tostring(value) ..
    ' is not a positive integer')
end

local function grant(lease, lease_ms)
  local n = redis.call('HINCRBY', lease, 'n', 1)
  local now = redis.call('TIME')
  local token = now[1] .. '.' .. now[2] .. '.' .. n
  redis.call('HSET', lease, 'token', token)
  redis.call('PEXPIRE', lease, lease_ms)
  return token
end

local function read(keys, args)
  local lease_ms = positive(args[1])
  if not lease_ms then return bad('{READ}', 'lease_ms', args[1]) end
  local key = keys[1]
  local value = redis.call('GET', key)
  if value then
    return {{'hit', value}}
  end
  local lease = lease_key(key)
  if not lease then
    return {{'busy', 0}}
  end
  if redis.call('HEXISTS', lease, 'token') == 1 then
    local left = redis.call('PTTL', lease)
    if left < 0 then left = 0 end
    return {{'busy', left}}
  end
  return {{'lease', grant(lease, lease_ms)}}
end

local function fill(keys, args)
  local token, value = args[1], args[2]
  local ttl = positive(args[3])
  if not ttl then return bad('{FILL}', 'ttl_s', args[3]) end
  local key = keys[1]
  local lease = lease_key(key)
  if not lease or not token or redis.call('HGET', lease, 'token') ~= token then
    return 0
  end
  redis.call('SET', key, value, 'EX', ttl)
  redis.call('HDEL', lease, 'token')
  redis.call('PEXPIRE', lease, FILLED_GRACE_MS)
  return 1
end

local function warm_lease(keys, args)
  local lease_ms = positive(args[1])
  if not lease_ms then return bad('{WARM_LEASE}', 'lease_ms', args[1]) end
  local lease = lease_key(keys[1])
  if not lease then
    return {{'busy', 0}}
  end
  return {{'lease', grant(lease, lease_ms)}}
end

local function release(keys, args)
  local lease = lease_key(keys[1])
  if not lease or not args[1] or redis.call('HGET', lease, 'token') ~= args[1] then
    return 0
  end
  redis.call('HDEL', lease, 'token')
  return 1
end

local function invalidate(keys, args)
  local probe, bound, hold_ms = args[1], tonumber(args[2]), positive(args[3])
  if probe ~= 'IDLETIME' and probe ~= 'FREQ' then
    return redis.error_reply('{INVALIDATE}: probe ' .. tostring(probe) ..
      ' is not IDLETIME or FREQ')
  end
  if not bound then return bad('{INVALIDATE}', 'bound', args[2]) end
  if not hold_ms then return bad('{INVALIDATE}', 'hold_ms', args[3]) end
  local out = {{}}
  for _, key in ipairs(keys) do
    local lease = lease_key(key)
    local stood = lease and redis.call('EXISTS', lease) or 0
    local answer = -1
    if redis.call('EXISTS', key) == 1 then
      -- an error (FREQ without an LFU policy, IDLETIME with one) means "not known hot"
      local probed = redis.pcall('OBJECT', probe, key)
      if type(probed) == 'number' then answer = probed end
    end
    local hot = stood == 1 or (answer >= 0 and
      ((probe == 'IDLETIME' and answer <= bound) or (probe == 'FREQ' and answer >= bound)))
    local token = ''
    if hot and lease then
      token = grant(lease, hold_ms)  -- a new token: every earlier one is revoked
    elseif stood == 1 then
      redis.call('DEL', lease)
    end
    out[#out + 1] = redis.call('UNLINK', key)
    out[#out + 1] = stood
    out[#out + 1] = answer
    out[#out + 1] = token
  end
  return out
end

-- Flags (Redis 7.0): a function registered without flags is refused at maxmemory under
-- noeviction, hits and deletions included. allow-oom lets it run there; it is given to the
-- functions whose writes free memory or hold only a small, expiring lease (see functions.py).
redis.register_function{{function_name='{READ}', callback=read, flags={{'allow-oom'}}}}
redis.register_function('{FILL}', fill)
redis.register_function('{WARM_LEASE}', warm_lease)
redis.register_function{{function_name='{RELEASE}', callback=release, flags={{'allow-oom'}}}}
redis.register_function{{function_name='{INVALIDATE}', callback=invalidate,
  flags={{'allow-oom'}}}}
"""


class Answer(NamedTuple):
    """What primer_cache_read (or primer_cache_warm_lease) said: kind is "hit" (payload: the
    value), "lease" (payload: the token) or "busy" (payload: milliseconds left, as bytes)."""

    kind: str
    payload: bytes

    @property
    def token(self) -> str | None:
        return self.payload.decode() if self.kind == "lease" else None

    @property
    def ms_left(self) -> int:
        return int(self.payload) if self.kind == "busy" else 0


def parse_answer(reply: Any) -> Answer:
    """A primer_cache_read / primer_cache_warm_lease reply as an Answer; ValueError when the
    reply is not one of the three shapes (a library of another version)."""
    try:
        kind, payload = reply
    except (TypeError, ValueError):
        raise ValueError(f"unexpected reply from {READ}: {reply!r}") from None
    answer = Answer(_text(kind), _bytes(payload))
    if answer.kind not in ("hit", "lease", "busy"):
        raise ValueError(f"unexpected reply from {READ}: {reply!r}")
    return answer


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _bytes(raw: object) -> bytes:
    if isinstance(raw, bytes):
        return raw
    return str(raw).encode()
