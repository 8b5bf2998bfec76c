"""Artifact downloads: size and digest are checked before any byte reaches onnxruntime."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edgeloop.contract.artifact import ArtifactRef
from edgeloop.edge.fetch import FetchFailed, fetch_artifact

BODY = b"model bytes " * 100


class _Handler(BaseHTTPRequestHandler):
    bodies: dict[str, bytes] = {}

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        body = self.bodies.get(path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.bodies = {"/model.onnx": BODY, "/big.onnx": BODY * 3}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def ref(url: str, body: bytes = BODY, **changes: object) -> ArtifactRef:
    fields = {"url": url, "sha256": hashlib.sha256(body).hexdigest(), "size": len(body), **changes}
    return ArtifactRef(**fields)  # type: ignore[arg-type]


def test_an_intact_artifact_is_returned(server: str) -> None:
    assert fetch_artifact(ref(f"{server}/model.onnx?X-Amz-Signature=secret")) == BODY


def test_a_checksum_mismatch_is_refused_naming_both_digests(server: str) -> None:
    wrong = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(FetchFailed, match=f"does not match the assignment's {wrong}"):
        fetch_artifact(ref(f"{server}/model.onnx", sha256=wrong))


def test_a_truncated_download_is_refused(server: str) -> None:
    with pytest.raises(FetchFailed, match=f"truncated download, {len(BODY)} of {len(BODY) + 10} bytes"):
        fetch_artifact(ref(f"{server}/model.onnx", size=len(BODY) + 10))


def test_a_server_sending_more_than_the_assignment_says_is_cut_off(server: str) -> None:
    with pytest.raises(FetchFailed, match="server announces"):
        fetch_artifact(ref(f"{server}/big.onnx"))


def test_an_unreachable_artifact_names_the_url_without_its_credentials(server: str) -> None:
    with pytest.raises(FetchFailed) as caught:
        fetch_artifact(ref(f"{server}/missing.onnx?X-Amz-Signature=secret"))
    assert "/missing.onnx" in str(caught.value)
    assert "secret" not in str(caught.value)
