"""The service-time estimate that deadline admission control sheds by, built so that it recovers.

A shedder that only learns from the calls it lets through can lock itself out: one slow call (a
60 ms stall of a shared machine) lifts a moving average above the deadline, every later request is
shed, no call is served, and the estimate never comes down. `ServiceEstimate` avoids that three ways:

- one estimate per batch-size bucket (1, 2, 3-4, 5-8, ...): a large batch's cost never sheds a
  lone request, and a size never seen is extrapolated from its neighbours;
- what a bucket learned beyond its fastest call so far decays with time (`half_life_s`) and with
  offered work (every `shed_half_life` requests shed without a served call halve it), so stale
  evidence of a stall fades whether the server is idle or flooded;
- `probe_due` lets one request through when nothing has been admitted for `probe_every_ms`
  (the server asks only when its queue is empty, so a probe is served at once), so the estimate
  is refreshed by a real call even when the model has really slowed down.

The estimate is read on every request, so it is plain arithmetic on a few floats; workers update
it without a lock (a lost update under a race only delays one sample).
"""
from __future__ import annotations

_EWMA = 0.2


def size_bucket(batch_size: int) -> int:
    """0 for one request, 1 for two, 2 for 3-4, 3 for 5-8, ...: powers of two, so few buckets cover
    any max_batch and each fills quickly."""
    return max(int(batch_size) - 1, 0).bit_length()


class ServiceEstimate:
    """Service time per batch-size bucket (an EWMA of served calls above each bucket's fastest call,
    fading with time and with shed requests) plus the bookkeeping for probes."""

    __slots__ = ("half_life_s", "shed_half_life", "probe_every_ns", "_value", "_floor", "_at", "_shed_at", "shed",
                 "probes", "_last_admit_ns")

    def __init__(self, half_life_s: float = 0.1, shed_half_life: int = 32, probe_every_ms: float = 50.0):
        self.half_life_s, self.shed_half_life = float(half_life_s), int(shed_half_life)
        self.probe_every_ns = int(probe_every_ms * 1e6)
        self._value: dict[int, float] = {}  # bucket -> EWMA (ns) as of `_at`
        self._floor: dict[int, float] = {}  # bucket -> fastest call seen (ns): where the estimate fades to
        self._at: dict[int, int] = {}  # bucket -> when it was last updated (monotonic ns)
        self._shed_at: dict[int, int] = {}  # bucket -> the shed count at that update
        self.shed = 0  # requests shed by deadline (the offered work that served no call)
        self.probes = 0
        self._last_admit_ns = 0

    def _current(self, bucket: int, now_ns: int) -> float:
        floor, value = self._floor[bucket], self._value[bucket]
        if value <= floor:
            return value
        halvings = (now_ns - self._at[bucket]) / 1e9 / self.half_life_s + (
            self.shed - self._shed_at[bucket]) / self.shed_half_life
        return floor + (value - floor) * 0.5 ** min(halvings, 60.0)

    def ns(self, batch_size: int, now_ns: int) -> float:
        """Expected time of one call with `batch_size` requests (0 until any call was measured:
        nothing is shed on no evidence)."""
        if not self._value:
            return 0.0
        bucket = size_bucket(batch_size)
        if bucket in self._value:
            return self._current(bucket, now_ns)
        smaller = [b for b in self._value if b < bucket]
        if smaller:  # linear in batch size from the nearest smaller bucket: a cautious extrapolation
            near = max(smaller)
            return self._current(near, now_ns) * 2.0 ** (bucket - near)
        return self._current(min(self._value), now_ns)  # a larger batch's time bounds a smaller one's

    def observe(self, batch_size: int, took_ns: int, now_ns: int) -> None:
        """A served call of `batch_size` requests took `took_ns`."""
        bucket = size_bucket(batch_size)
        if bucket not in self._value:
            self._value[bucket] = self._floor[bucket] = float(took_ns)
        else:
            current = self._current(bucket, now_ns)
            self._value[bucket] = (1 - _EWMA) * current + _EWMA * took_ns
            self._floor[bucket] = min(self._floor[bucket], float(took_ns))
        self._at[bucket], self._shed_at[bucket] = now_ns, self.shed
        self._last_admit_ns = now_ns

    def admitted(self, now_ns: int) -> None:
        self._last_admit_ns = now_ns

    def probe_due(self, now_ns: int) -> bool:
        """True (and counted) when nothing was admitted for `probe_every_ms`: this request goes through
        whatever the estimate says, so a real call refreshes it."""
        if now_ns - self._last_admit_ns < self.probe_every_ns:
            return False
        self._last_admit_ns = now_ns
        self.probes += 1
        return True

    def by_batch_size(self, now_ns: int) -> dict[int, float]:
        """The current estimate in ms, keyed by the largest batch size of each measured bucket."""
        return {1 << b: self._current(b, now_ns) / 1e6 for b in sorted(self._value)}
