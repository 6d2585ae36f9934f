"""How long the periodic recheck leaves a tenant whose reconcile failed alone before retrying it: pure.

Exponential (`base`, ×2 per consecutive failure, at most `cap`) with *equal* jitter: the wait is half the
exponential step plus a random share of the other half. The fixed half guarantees that a tenant failing
for good is retried less and less often (the point: no full re-apply every recheck forever); the random
half keeps tenants that failed together (an API server outage, RBAC broken by an upgrade) from retrying in
lockstep. Full jitter spreads a little better but can retry at once after any number of failures, which
would make "backs off" a statistical claim rather than a bound. A success resets the count (the runner).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

# 2**64 × any sane base is far above any cap; bounding the exponent keeps the float finite.
_MAX_EXPONENT = 64


@dataclasses.dataclass(frozen=True)
class Backoff:
    base: float = 5.0  # the first step: the operator's default recheck interval
    cap: float = 300.0  # the longest step: a failing tenant is still retried every 5 minutes at most

    def step(self, failures: int) -> float:
        """base·2^(failures−1), at most `cap`; 0 after no failure (a success resets the count)."""
        if failures < 1:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(failures - 1, _MAX_EXPONENT))

    def delay(self, failures: int, rand: Callable[[], float]) -> float:
        """Seconds to wait after the `failures`-th consecutive failure: in [step/2, step].

        `rand` returns a float in [0, 1) (random.random; a fixed value in tests).
        """
        step = self.step(failures)
        return step / 2 + rand() * step / 2
