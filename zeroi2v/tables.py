"""Small statistics and formatting helpers the result tables share (``zeroi2v.fewshot.aggregate``, the
ablation grid's ``zeroi2v.ablate_report``): mean ± sample standard deviation, an order that puts the given
names first, and the "41.3 ± 1.2" percent cell."""
from __future__ import annotations

import statistics
from typing import Iterable, Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (n - 1; 0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def ordered(seen: Iterable, given: Sequence | None) -> list:
    """``given`` first (those present), then the others in the order first met."""
    seen = list(dict.fromkeys(seen))
    first = [g for g in (given or []) if g in seen]
    return first + [s for s in seen if s not in first]


def pct(mean: float, std: float | None, n: int) -> str:
    """A fraction as percent, "41.3 ± 1.2" (the ± only when ``std`` is known and ``n > 1``)."""
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None and n > 1 else "")
