"""Per-grant rate limit on Nylas calls, shared by every worker through Redis, with a cool-down after a 429."""

from __future__ import annotations

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


class GrantThrottle:
    """Fixed one-second windows per grant: simple, and exact enough at the rates Nylas and providers allow."""

    def __init__(self, redis: ArqRedis, *, rate: int, window_ms: int = 1000, prefix: str = "mailroom:throttle") -> None:
        self._redis = redis
        self._rate = rate
        self._window_ms = window_ms
        self._prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE)

    async def acquire(self, grant_id: str) -> float:
        """Take a call for the grant; 0.0 when it may go now, else the seconds to wait before asking again."""
        waited = await self._acquire(
            keys=[f"{self._prefix}:cool:{grant_id}", f"{self._prefix}:rate:{grant_id}"],
            args=[self._rate, self._window_ms],
        )
        return int(waited) / 1000

    async def cool_down(self, grant_id: str, seconds: float) -> None:
        """After a 429: no calls for this grant until the provider's Retry-After has passed."""
        ms = max(1, int(seconds * 1000))
        await self._redis.set(f"{self._prefix}:cool:{grant_id}", b"1", px=ms)
