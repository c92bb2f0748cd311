"""A registry of the tests' own on 127.0.0.1 that answers what a test scripts, hostile included.

:class:`HostileRegistry` speaks just enough of the distribution API for a substituter: a
test sets :attr:`HostileRegistry.answer`, a function from the request to an :class:`Answer`
(status, headers, body as bytes or an iterator of chunks, and a pause between chunks for
slow answers). Every request's path and headers are recorded, so tests can check what a
client sent (credentials, say). An :class:`Answer` with ``drip`` sends its body one chunk
per ``drip`` seconds; with an iterator body and no Content-Length, it never ends until the
client goes away.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from venvseal.oci.artifact import manifest_for
from venvseal.oci.model import Blob, sha256_digest
from venvseal.store.core import PathInfo

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Answer:
    """One scripted HTTP answer."""

    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    drip: float = 0.0  # seconds between chunks
    length: bool = True  # send Content-Length (for bytes bodies)


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]


Script = Callable[[str, str, dict[str, str]], Answer]


def not_found(_method: str, _path: str, _headers: dict[str, str]) -> Answer:
    return Answer(404, b'{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]}')


class HostileRegistry:
    """A scripted HTTP server; ``host`` is ``127.0.0.1:PORT``."""

    def __init__(self) -> None:
        self.answer: Script = not_found
        self.seen: list[Seen] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_any(self) -> None:
                headers = dict(self.headers.items())
                registry.seen.append(Seen(self.command, self.path, headers))
                if self.command in ("POST", "PUT") and self.headers.get("Content-Length"):
                    self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v2/" and registry.answer is not_found:
                    answer = Answer(200, b"{}")
                else:
                    answer = registry.answer(self.command, self.path, headers)
                # The client may give up: what a bounded client does.
                with contextlib.suppress(OSError):  # broken pipe, reset, TLS EOF, timeout
                    self.send(answer)

            def send(self, answer: Answer) -> None:
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                body = answer.body
                if isinstance(body, bytes) and answer.length:
                    self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command == "HEAD":
                    return
                chunks: Iterable[bytes] = (
                    [body[i:i + 1] for i in range(len(body))] if isinstance(body, bytes)
                    and answer.drip else [body] if isinstance(body, bytes) else body)
                for chunk in chunks:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    if answer.drip:
                        time.sleep(answer.drip)
                self.close_connection = True

            do_GET = do_HEAD = do_POST = do_PUT = handle_any

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"

    def requests(self, method: str = "") -> list[Seen]:
        return [s for s in self.seen if not method or s.method == method]


@contextmanager
def hostile_registry() -> Iterator[HostileRegistry]:
    server = HostileRegistry()
    thread = threading.Thread(target=server.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def endless(chunk: bytes = b"\0" * 65536) -> Iterator[bytes]:
    """A body that never ends."""
    while True:
        yield chunk


def artifact(info: PathInfo, layer: bytes, notes: dict[str, str] | None = None
             ) -> tuple[bytes, bytes]:
    """(manifest, layer) describing ``info`` whose NAR layer is ``layer``, with ``notes``
    replacing annotations (the manifest as venvseal writes it otherwise)."""
    blob = Blob(sha256_digest(layer), len(layer), lambda: io.BytesIO(layer))
    config = Blob(sha256_digest(b"{}"), 2, lambda: io.BytesIO(b"{}"))
    doc = json.loads(manifest_for(info, config, blob))
    doc["annotations"].update(notes or {})
    return json.dumps(doc).encode(), layer


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def write_docker_config(folder: Path, host: str, auth: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return folder
