"""How a Study runs (`RunOptions`), and the older keyword spelling of its options and pricing.

    Study(model, data, recipes, options=RunOptions(time_limit_s=600, progress=False),
          pricing=Pricing("gpu-h100", utilisation=0.6))

Both values are frozen and checked when made, so a bad limit is refused before any work.
`Study(..., time_limit_s=600, price_per_hour_usd=4.0)` (the keywords these values replace)
still works through `from_keywords`, with a DeprecationWarning naming the new spelling.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from optlab.study.table import Pricing


@dataclass(frozen=True)
class RunOptions:
    """What bounds a study's run, what it retries and prints, who runs its tasks and what they time.

    executor: anything with `run(fn, tasks) -> iterable of rows` (default: in this process, one
    task after another; see optlab.study.executor). inputs: what the latency measurement times
    (default: the dataset's requests, else its test inputs). retry_errors: run stored error rows
    again. progress: show a progress bar. verbose: print dependencies' warnings instead of counting
    them into each row's notes. time_limit_s: bound on the whole run (seconds), counted from
    `time_limit_from` (a `time.monotonic()` instant; default: when run() starts), keeping
    `time_limit_reserve_s` for the caller's own work afterwards (the CLI writes its report then).
    lock_timeout_s: how long run() waits for another process holding the results folder.
    """

    executor: Any = field(default=None, compare=False)
    inputs: Any = field(default=None, compare=False, repr=False)
    retry_errors: bool = False
    progress: bool = True
    verbose: bool = False
    time_limit_s: float | None = None
    time_limit_from: float | None = None
    time_limit_reserve_s: float = 0.0
    lock_timeout_s: float = 0.0

    def __post_init__(self):
        limit = self.time_limit_s
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                                  or not math.isfinite(limit) or limit <= 0):
            raise ValueError(f"time_limit_s={limit!r} must be a positive number of seconds (or None: no limit)")
        if not isinstance(self.time_limit_reserve_s, (int, float)) or not self.time_limit_reserve_s >= 0:
            raise ValueError(f"time_limit_reserve_s={self.time_limit_reserve_s!r} must be >= 0 seconds")
        if not isinstance(self.lock_timeout_s, (int, float)) or self.lock_timeout_s < 0:
            raise ValueError(f"lock_timeout_s={self.lock_timeout_s!r} must be >= 0 seconds")
        if self.executor is not None and not callable(getattr(self.executor, "run", None)):
            raise TypeError(
                "executor must have a run(fn, tasks) method yielding rows (see optlab.study.executor.Executor)"
            )


RUN_KEYWORDS = tuple(f.name for f in dataclasses.fields(RunOptions))
PRICING_KEYWORDS = tuple(f.name for f in dataclasses.fields(Pricing))


def from_keywords(options: RunOptions | None, pricing: Pricing | Any, keywords: dict[str, Any],
                  ) -> tuple[RunOptions, Pricing]:
    """`options` and `pricing` with the older keywords folded in (they win: they were named last).

    `pricing` may also be a bare price (a number, a preset name or a `costs.Price`). Warns once
    (DeprecationWarning) when there are keywords; an unknown one is a TypeError, as Python's own.
    """
    unknown = sorted(set(keywords) - set(RUN_KEYWORDS) - set(PRICING_KEYWORDS))
    if unknown:
        raise TypeError(f"Study() got an unexpected keyword argument {unknown[0]!r}; run options go in "
                        f"options=RunOptions(...) ({', '.join(RUN_KEYWORDS)}), prices in pricing=Pricing(...)")
    options = options if options is not None else RunOptions()
    if not isinstance(options, RunOptions):
        raise TypeError(f"options must be an optlab.study.options.RunOptions; got {type(options).__name__}")
    if pricing is None or not isinstance(pricing, Pricing):
        pricing = Pricing(pricing)
    if keywords:
        run = {k: v for k, v in keywords.items() if k in RUN_KEYWORDS}
        price = {k: v for k, v in keywords.items() if k in PRICING_KEYWORDS}
        spelled = [f"options=RunOptions({', '.join(f'{k}=...' for k in run)})"] if run else []
        spelled += [f"pricing=Pricing({', '.join(f'{k}=...' for k in price)})"] if price else []
        warnings.warn(f"Study({', '.join(f'{k}=...' for k in keywords)}) is deprecated; pass "
                      f"{' and '.join(spelled)} (optlab.study.options)", DeprecationWarning, stacklevel=3)
        options = dataclasses.replace(options, **run)
        pricing = dataclasses.replace(pricing, **price)
    return options, pricing
