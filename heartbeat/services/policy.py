"""An agent's heartbeat policy, `runtime_config.heartbeat` (reference 2.1): pure decisions."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_CONCURRENT_RUNS_LIMIT = 10
# Read, in this order, when `wakeOnDemand` is absent (reference 2.1).
_WAKE_ON_DEMAND_FALLBACKS = ("wakeOnAssignment", "wakeOnOnDemand", "wakeOnAutomation")


@dataclass(frozen=True)
class HeartbeatPolicy:
    enabled: bool
    interval_sec: int
    wake_on_demand: bool
    max_concurrent_runs: int


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def heartbeat_policy(runtime_config: Mapping[str, Any] | None) -> HeartbeatPolicy:
    section = (runtime_config or {}).get("heartbeat")
    section = section if isinstance(section, dict) else {}
    wake_on_demand = section.get("wakeOnDemand")
    if wake_on_demand is None:
        wake_on_demand = next(
            (section[key] for key in _WAKE_ON_DEMAND_FALLBACKS if key in section), True
        )
    interval = _number(section.get("intervalSec"))
    cap = _number(section.get("maxConcurrentRuns"))
    return HeartbeatPolicy(
        enabled=section.get("enabled") is True,
        interval_sec=max(int(interval), 0) if interval is not None else 0,
        wake_on_demand=wake_on_demand is not False,
        max_concurrent_runs=1
        if cap is None
        else min(max(math.floor(cap), 1), MAX_CONCURRENT_RUNS_LIMIT),
    )


def heartbeat_policy_max_concurrent_runs(runtime_config: Mapping[str, Any] | None) -> int:
    """maxConcurrentRuns floored and clamped to 1..10; non-numbers and infinities give 1."""
    return heartbeat_policy(runtime_config).max_concurrent_runs
