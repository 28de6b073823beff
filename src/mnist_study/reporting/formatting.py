"""How the report and its neighbours write numbers: means with their spread, points, p-values, durations."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan, 0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan), len(values)


def fmt(mean: float, std: float, scale: float = 1.0, digits: int = 2) -> str:
    if math.isnan(mean):
        return "—"
    text = f"{mean * scale:.{digits}f}"
    return text if math.isnan(std) else f"{text} ± {std * scale:.{digits}f}"


def distinct(values: Iterable[Any]) -> list[Any]:
    """The values in order of first appearance, each once, None left out."""
    return list(dict.fromkeys(v for v in values if v is not None))


def listing(values: Iterable[Any], missing: str = "not recorded") -> str:
    return ", ".join(str(v) for v in distinct(values)) or missing


def duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def rate(lr: float | None) -> str:
    return "—" if lr is None else f"{lr:g}"


def points(value: float) -> str:
    return f"{value:+.2f}"


def p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3g}"
