"""A journey event's monotonic time: ``ts.monotonic_ns``, else ``ts.monotonic`` in seconds.

The one place of that fallback; the step targets (:mod:`.timestamps`) and the engine-loop
readings (:mod:`.engineloop`) both read the events' times through it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TS_NS = "ts.monotonic_ns"
TS_S = "ts.monotonic"
NS_PER_S = 1e9


def journey_ts_ns_where_known(journeys: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(int64 ns stamps as :func:`journey_ts_ns` gives them, 0 where unknown; a mask of the
    events that carry ``ts.monotonic_ns`` or a finite ``ts.monotonic``)."""
    n = len(journeys)
    out = np.zeros(n, dtype=np.int64)
    have = np.zeros(n, dtype=bool)
    if TS_NS in journeys:
        ns = pd.array(journeys[TS_NS], dtype="Int64")
        have = ~np.asarray(ns.isna(), dtype=bool)
        out = ns.to_numpy(dtype=np.int64, na_value=0)
    missing = ~have
    if missing.any() and TS_S in journeys:
        sec = pd.to_numeric(journeys[TS_S], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan)
        fallback = missing & np.isfinite(sec)
        out[fallback] = np.rint(sec[fallback] * NS_PER_S).astype(np.int64)
        have = have | fallback
    return out, have
