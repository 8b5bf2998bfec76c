"""Reading Prometheus back: which catalogue families have no series yet (with a fake Prometheus API)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from edgeloop.metrics.catalogue import METRICS
from edgeloop.metrics.promql import (
    EDGELOOP_NAMES_MATCH,
    PrometheusQueryError,
    missing_families,
    missing_metric_families,
    prometheus_data,
    promql_string,
    series_names,
    wait_for_metric_families,
)


def test_a_family_is_present_under_any_of_its_series_names() -> None:
    present = {
        "edgeloop_ingest_records_total",  # a counter, asked for with or without `_total`
        "edgeloop_training_duration_seconds_count",  # as if it were a histogram or a summary
        "edgeloop_drift_score",
    }
    families = [
        "edgeloop_ingest_records_total",
        "edgeloop_ingest_records",
        "edgeloop_training_duration_seconds",
        "edgeloop_drift_score",
        "edgeloop_drift_detected",
        "edgeloop_rollout_rollbacks_total",
        "edgeloop_drift_detected",
    ]
    assert missing_families(present, families) == ["edgeloop_drift_detected", "edgeloop_rollout_rollbacks_total"]


def test_series_names_cover_counter_histogram_and_summary_parts() -> None:
    assert series_names("edgeloop_ingest_records_total") == {
        "edgeloop_ingest_records_total",
        "edgeloop_ingest_records",
        "edgeloop_ingest_records_bucket",
        "edgeloop_ingest_records_count",
        "edgeloop_ingest_records_sum",
    }
    # a gauge is never mistaken for another family's part
    assert "edgeloop_drift_score" not in series_names("edgeloop_drift_share_ratio")


def test_an_error_answer_names_the_url_and_prometheus_error() -> None:
    answer = {"status": "error", "errorType": "bad_data", "error": 'parse error at char 3: unexpected "}"'}
    with pytest.raises(PrometheusQueryError, match=r"http://p:9090/api/v1/query: parse error at char 3"):
        prometheus_data(answer, "http://p:9090/api/v1/query")
    with pytest.raises(PrometheusQueryError, match="not a Prometheus API answer"):
        prometheus_data(["edgeloop_drift_score"], "http://p:9090/api/v1/label/__name__/values")
    assert prometheus_data({"status": "success", "data": ["a"]}, "x") == ["a"]


def test_promql_string_escapes_quotes_and_backslashes() -> None:
    assert promql_string('a"b\\c') == '"a\\"b\\\\c"'


# --- against a fake Prometheus HTTP API --------------------------------------------------------


@dataclass
class FakePrometheus:
    """Answers /api/v1/label/__name__/values from series given as (name, labels), like Prometheus does."""

    series: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    requests: list[list[tuple[str, str]]] = field(default_factory=list)
    status: int = 200

    def names(self, params: list[tuple[str, str]]) -> list[str]:
        selectors = [v for k, v in params if k == "match[]"]
        out = set()
        for name, labels in self.series:
            for selector in selectors:
                wanted = selector.split('pipeline="', 1)[1].split('"', 1)[0] if "pipeline=" in selector else None
                if name.startswith("edgeloop") and wanted in (None, labels.get("pipeline")):
                    out.add(name)
        return sorted(out)


@pytest.fixture
def prometheus() -> Iterator[tuple[str, FakePrometheus]]:
    fake = FakePrometheus()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            params = parse_qsl(url.query)
            fake.requests.append(params)
            body: dict[str, Any]
            if fake.status != 200:
                body = {"status": "error", "errorType": "internal", "error": "TSDB is closing"}
            elif url.path == "/api/v1/label/__name__/values":
                body = {"status": "success", "data": fake.names(params)}
            else:
                body = {"status": "error", "errorType": "not_found", "error": f"no route {url.path}"}
            data = json.dumps(body).encode()
            self.send_response(fake.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", fake
    finally:
        server.shutdown()
        server.server_close()


def test_every_catalogue_family_is_missing_from_an_empty_prometheus(prometheus: tuple[str, FakePrometheus]) -> None:
    url, _ = prometheus
    assert missing_metric_families(url) == [metric.name for metric in METRICS]


def test_families_of_one_pipeline_need_series_of_that_pipeline(prometheus: tuple[str, FakePrometheus]) -> None:
    url, fake = prometheus
    fake.series = [
        ("edgeloop_drift_score", {"pipeline": "other"}),
        ("edgeloop_ingest_records_total", {"pipeline": "mine"}),
        ("edgeloop_exporter_reader_up", {"reader": "fleet"}),
        ("up", {"job": "pushgateway"}),
    ]
    families = ["edgeloop_drift_score", "edgeloop_ingest_records_total", "edgeloop_exporter_reader_up"]
    assert missing_metric_families(url, families, pipeline="mine") == ["edgeloop_drift_score"]
    assert missing_metric_families(url, families) == []
    selectors = [v for params in fake.requests for k, v in params if k == "match[]"]
    assert '{__name__=~"edgeloop[_:].+", pipeline="mine"}' in selectors
    assert EDGELOOP_NAMES_MATCH in selectors


def test_since_asks_prometheus_for_a_time_range(prometheus: tuple[str, FakePrometheus]) -> None:
    url, fake = prometheus
    missing_metric_families(url, ["edgeloop_drift_score"], since=1_700_000_000.0)
    params = dict(fake.requests[-1])
    assert params["start"] == "1700000000.000"
    assert float(params["end"]) > 1_700_000_000


def test_a_failing_or_absent_prometheus_is_a_query_error_naming_it(prometheus: tuple[str, FakePrometheus]) -> None:
    url, fake = prometheus
    fake.status = 503
    with pytest.raises(PrometheusQueryError, match="TSDB is closing"):
        missing_metric_families(url)
    with pytest.raises(PrometheusQueryError, match=r"Prometheus at http://127.0.0.1:9 is not reachable"):
        missing_metric_families("http://127.0.0.1:9", timeout=2)


def test_waiting_returns_as_soon_as_nothing_is_missing(prometheus: tuple[str, FakePrometheus]) -> None:
    url, fake = prometheus
    fake.series = [("edgeloop_drift_score", {"pipeline": "mine"})]
    assert wait_for_metric_families(url, ["edgeloop_drift_score"], pipeline="mine", deadline_s=30) == []
    assert len(fake.requests) == 1
    missing = wait_for_metric_families(url, ["edgeloop_drift_detected"], pipeline="mine", deadline_s=0.3, poll_s=0.1)
    assert missing == ["edgeloop_drift_detected"]
