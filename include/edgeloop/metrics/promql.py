"""Reading Prometheus back: a small client for its HTTP API (PromQL range queries, metric names).

The pipeline page's charts and the tests ask Prometheus which edgeloop families have series
(:func:`missing_metric_families`) and what their values were (:func:`query_range`).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Any

from edgeloop.metrics.catalogue import BY_NAME, METRICS
from edgeloop.metrics.urls import http_url

SERIES_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
"""Suffixes under which Prometheus stores a family's samples (counter, histogram and summary parts)."""

EDGELOOP_NAMES_MATCH = '{__name__=~"edgeloop[_:].+"}'
"""Series selector of every edgeloop metric and recording rule."""


class PrometheusQueryError(RuntimeError):
    """Prometheus did not answer a query, or answered with an error; the message names the URL."""


class PrometheusUnavailable(PrometheusQueryError):
    """Prometheus could not be reached at all (connection refused, timeout, not HTTP)."""


def promql_string(value: str) -> str:
    """`value` as a PromQL string literal (double quotes; backslash, quote and control characters escaped)."""
    return json.dumps(value)


def query_prometheus(prometheus_url: str, path: str, params: Sequence[tuple[str, str]], timeout: float = 10.0) -> Any:
    """GET one Prometheus HTTP API path (e.g. ``/api/v1/query_range``) and return its ``data``.

    Raises PrometheusQueryError when Prometheus is unreachable, the answer is not JSON or its
    status is not ``success`` (the message names the URL and Prometheus' own error).
    """
    base = http_url(prometheus_url).rstrip("/")
    url = f"{base}{path}?{urllib.parse.urlencode(list(params))}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the configured Prometheus URL
            payload = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        # Prometheus answers 400/422/503 with a JSON error body that says what is wrong
        try:
            payload = json.loads(exc.read())
        except ValueError:
            raise PrometheusQueryError(f"{base}{path}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PrometheusUnavailable(f"Prometheus at {base} is not reachable ({path}): {exc}") from exc
    return prometheus_data(payload, f"{base}{path}")


def prometheus_data(payload: Any, where: str) -> Any:
    """The ``data`` of a Prometheus API answer; PrometheusQueryError unless its status is ``success``."""
    if not isinstance(payload, dict) or payload.get("status") != "success":
        error = payload.get("error") if isinstance(payload, dict) else None
        raise PrometheusQueryError(f"{where}: {error or 'not a Prometheus API answer'}")
    return payload.get("data")


def query_range(
    prometheus_url: str, expr: str, start: float, end: float, step: float, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """A PromQL range query: Prometheus' matrix, one ``{"metric": labels, "values": [[t, "v"], ...]}`` per series."""
    params = [("query", expr), ("start", f"{start:.3f}"), ("end", f"{end:.3f}"), ("step", f"{step:g}")]
    data = query_prometheus(prometheus_url, "/api/v1/query_range", params, timeout)
    if not isinstance(data, dict) or data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        raise PrometheusQueryError(f"{prometheus_url}: a range query did not answer a matrix for {expr}")
    return list(data["result"])


def series_names(family: str) -> frozenset[str]:
    """Sample names under which Prometheus may hold a family's series.

    ``edgeloop_ingest_records_total`` and ``edgeloop_ingest_records`` both name the counter
    family; a histogram or summary shows up as ``_bucket``, ``_count`` or ``_sum`` series.
    """
    base = family.removesuffix("_total")
    return frozenset({family, base, *(f"{base}{suffix}" for suffix in SERIES_SUFFIXES)})


def missing_families(present: Iterable[str], families: Iterable[str]) -> list[str]:
    """The `families` (in their order, without repeats) none of whose series names is in `present`."""
    seen = frozenset(present)
    return [f for f in dict.fromkeys(families) if not series_names(f) & seen]


def metric_names_in_prometheus(
    prometheus_url: str,
    match: Sequence[str] = (EDGELOOP_NAMES_MATCH,),
    *,
    since: float | None = None,
    timeout: float = 10.0,
) -> set[str]:
    """Metric names Prometheus holds series for, among the series that `match` selects.

    `since` (Unix seconds) limits the look to series with samples from then on; without it
    Prometheus answers from everything it stores.
    """
    params = [("match[]", selector) for selector in match]
    if since is not None:
        params += [("start", f"{since:.3f}"), ("end", f"{time.time():.3f}")]
    data = query_prometheus(prometheus_url, "/api/v1/label/__name__/values", params, timeout)
    if not isinstance(data, list):
        raise PrometheusQueryError(f"{prometheus_url}: label values are not a list: {data!r}"[:300])
    return {str(name) for name in data}


def missing_metric_families(
    prometheus_url: str,
    families: Iterable[str] | None = None,
    *,
    pipeline: str | None = None,
    since: float | None = None,
    timeout: float = 10.0,
) -> list[str]:
    """Metric families (default: the whole catalogue, METRICS) that have no series in Prometheus yet.

    A family is there when any of its series names is (see series_names). With `pipeline`,
    a family that carries the `pipeline` label needs a series of that pipeline; the exporter's
    own families (no `pipeline` label) need any series. Names outside the catalogue (e.g. a
    recording rule such as ``edgeloop:drift_score:max``) are treated as carrying `pipeline`.
    Raises PrometheusQueryError when Prometheus cannot be asked.
    """
    wanted = list(dict.fromkeys(families if families is not None else (m.name for m in METRICS)))
    if pipeline is None:
        return missing_families(metric_names_in_prometheus(prometheus_url, since=since, timeout=timeout), wanted)
    per_pipeline = [f for f in wanted if f not in BY_NAME or "pipeline" in BY_NAME[f].labels]
    global_ = [f for f in wanted if f in BY_NAME and "pipeline" not in BY_NAME[f].labels]
    missing: set[str] = set()
    if per_pipeline:
        selector = f'{{__name__=~"edgeloop[_:].+", pipeline={promql_string(pipeline)}}}'
        names = metric_names_in_prometheus(prometheus_url, (selector,), since=since, timeout=timeout)
        missing.update(missing_families(names, per_pipeline))
    if global_:
        names = metric_names_in_prometheus(prometheus_url, since=since, timeout=timeout)
        missing.update(missing_families(names, global_))
    return [f for f in wanted if f in missing]


def wait_for_metric_families(
    prometheus_url: str,
    families: Iterable[str] | None = None,
    *,
    pipeline: str | None = None,
    since: float | None = None,
    deadline_s: float = 60.0,
    poll_s: float = 2.0,
) -> list[str]:
    """Ask missing_metric_families until nothing is missing or `deadline_s` has passed; return what is missing.

    Meant for tests and the demo after a push: a pushed family reaches Prometheus with its next
    scrape of the Pushgateway (the local stack scrapes every 15 s).
    """
    wanted = list(families) if families is not None else None
    deadline = time.monotonic() + deadline_s
    while True:
        missing = missing_metric_families(prometheus_url, wanted, pipeline=pipeline, since=since)
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
