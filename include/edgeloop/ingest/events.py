"""What an ingest run tells the rest of the loop: the `raw` asset event's extra (keys and counts, no data)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MAX_KEYS_IN_EVENT = 500


def raw_event_extra(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge the per-topic results of one run into a small, JSON-able event extra."""
    keys = [key for r in results for key in r.get("objects", [])]
    return {
        "records": sum(int(r.get("records", 0)) for r in results),
        "dead_letters": sum(int(r.get("dead_letters", 0)) for r in results),
        "topics": {
            str(r["topic"]): {"records": r.get("records", 0), "objects": len(r.get("objects", []))} for r in results
        },
        "objects": keys[:MAX_KEYS_IN_EVENT],
        "objects_total": len(keys),
        "lag_total": sum(int(r.get("lag_total", 0)) for r in results),
    }
