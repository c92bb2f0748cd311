"""Shared test helpers (moved from test_registry.py)."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from support import free_port
from support.image import require_tool

OCI_ACCEPT = "application/vnd.oci.image.manifest.v1+json"

def http(url: str, *, method: str = "GET", headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    """One request without proxies; (status, headers, body), also for error statuses."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@dataclass
class Server:
    """A running docker-registry: where it listens and what it logged."""

    host: str
    log: Path

    def digest(self, repo: str, tag: str, auth: str | None = None) -> str:
        headers = {"Accept": OCI_ACCEPT, **({"Authorization": auth} if auth else {})}
        status, got, _ = http(f"http://{self.host}/v2/{repo}/manifests/{tag}", method="HEAD",
                              headers=headers)
        assert status == 200, (status, self.log.read_text()[-2000:])
        return got["Docker-Content-Digest"]



@contextmanager
def registry_server(workdir: Path, auth: str = "") -> Iterator[Server]:
    """docker-registry serving a fresh folder on 127.0.0.1 and a free port."""
    program = require_tool("docker-registry", "docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {workdir / "data"}
http:
  addr: 127.0.0.1:{port}
{auth}""")
    log = workdir / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([program, "serve", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"docker-registry exited:\n{log.read_text()}"
            try:
                http(f"http://127.0.0.1:{port}/v2/")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, f"no answer on /v2/:\n{log.read_text()}"
                time.sleep(0.1)
        yield Server(f"127.0.0.1:{port}", log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
