"""Per-grant rate limit on Nylas calls, shared by every worker through Redis, with a cool-down after a 429."""

from __future__ import annotations

from collections.abc import Mapping

from arq.connections import ArqRedis

# KEYS[1] cool-down key, KEYS[2] window counter; ARGV[1] limit, ARGV[2] window ms.
# Returns 0 when the call may go now, or the milliseconds to wait.
_ACQUIRE = """
local cool = redis.call('PTTL', KEYS[1])
if cool > 0 then return cool end
local count = redis.call('INCR', KEYS[2])
if count == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
if count > tonumber(ARGV[1]) then
  local left = redis.call('PTTL', KEYS[2])
  if left < 0 then left = tonumber(ARGV[2]) end
  return left
end
return 0
"""

# The same for many grants in one round trip. KEYS: (cool-down, counter) per grant; ARGV[1] window ms, then per
# grant the calls wanted and its limit. Returns, per grant, the calls granted now and the milliseconds until more.
_ACQUIRE_MANY = """
local out = {}
for i = 1, #KEYS, 2 do
  local wanted = tonumber(ARGV[i + 1])
  local limit = tonumber(ARGV[i + 2])
  local cool = redis.call('PTTL', KEYS[i])
  if cool > 0 then
    out[#out + 1] = 0
    out[#out + 1] = cool
  else
    local count = redis.call('INCRBY', KEYS[i + 1], wanted)
    if count == wanted then redis.call('PEXPIRE', KEYS[i + 1], ARGV[1]) end
    local granted = math.max(0, math.min(wanted, limit - (count - wanted)))
    local left = 0
    if granted < wanted then
      left = redis.call('PTTL', KEYS[i + 1])
      if left < 0 then left = tonumber(ARGV[1]) end
    end
    out[#out + 1] = granted
    out[#out + 1] = left
  end
end
return out
"""


class GrantThrottle:
    """Fixed one-second windows per grant: simple, and exact enough at the rates Nylas and providers allow."""

    def __init__(self, redis: ArqRedis, *, rate: int, window_ms: int = 1000, prefix: str = "mailroom:throttle") -> None:
        self._redis = redis
        self._rate = rate
        self._window_ms = window_ms
        self._prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE)
        self._acquire_many = redis.register_script(_ACQUIRE_MANY)

    async def acquire(self, grant_id: str, *, rate: int | None = None) -> float:
        """Take a call for the grant (at `rate` a second, an operator's setting, else the default); 0.0 when it may
        go now, else the seconds to wait before asking again."""
        waited = await self._acquire(
            keys=[f"{self._prefix}:cool:{grant_id}", f"{self._prefix}:rate:{grant_id}"],
            args=[rate or self._rate, self._window_ms],
        )
        return int(waited) / 1000

    async def acquire_many(
        self, wanted: dict[str, int], rates: Mapping[str, int] | None = None
    ) -> dict[str, tuple[int, float]]:
        """Take up to `wanted[grant]` calls per grant at once (each at its `rates` entry, else the default):
        grant -> (calls granted, seconds until more)."""
        if not wanted:
            return {}
        rates = rates or {}
        grants = sorted(wanted)
        keys = [key for g in grants for key in (f"{self._prefix}:cool:{g}", f"{self._prefix}:rate:{g}")]
        limits = [value for g in grants for value in (wanted[g], rates.get(g) or self._rate)]
        answer = await self._acquire_many(keys=keys, args=[self._window_ms, *limits])
        return {g: (int(answer[2 * n]), int(answer[2 * n + 1]) / 1000) for n, g in enumerate(grants)}

    async def cool_down(self, grant_id: str, seconds: float) -> None:
        """After a 429: no calls for this grant until the provider's Retry-After has passed."""
        ms = max(1, int(seconds * 1000))
        await self._redis.set(f"{self._prefix}:cool:{grant_id}", b"1", px=ms)
