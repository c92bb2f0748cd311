"""Benchmark: `venvseal build` fetching from an OCI build cache vs building.

What it measures, on a copy of a project (default: examples/demo), in one run:
    full       a build into a fresh store with a warm uv cache: the deps stage and the
               offline assembly both run (the baseline)
    cache hit  a build into a fresh store with --substituter pointing at a local
               docker-registry holding the paths (pushed once by `venvseal cache push`):
               every store path is fetched, nothing is built
The two alternate, each into its own fresh store, so both see the same machine load.
Medians over --runs pairs, and the hit as a ratio of the full build. The one push is timed
too.

Usage: .venv/bin/python benchmarks/cache.py [--project DIR] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from build import REPO, prepare, remove, venvseal


def start_registry(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """docker-registry on 127.0.0.1 and a free port, storing under ``work``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{s.getsockname()[1]}"
    config = work / "registry.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {work / 'registry'}\nhttp:\n  addr: {host}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for _ in range(100):
        try:
            opener.open(f"http://{host}/v2/", timeout=1).close()
            return proc, host
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("docker-registry did not start; run scripts/setup")


def row(label: str, times: Sequence[float], base: float) -> str:
    med = statistics.median(times)
    return f"| {label} ({len(times)} runs) | {med:.2f} s | {med / base:.2f} |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=REPO / "examples" / "demo")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/venvseal-bench/cache"))
    args = ap.parse_args()
    remove(args.work)
    args.work.mkdir(parents=True)
    project = prepare(args.project.resolve(), args.work)
    cache = args.work / "uv-cache"
    proc, host = start_registry(args.work)
    try:
        url = f"oci://{host}/bench/cache"
        venvseal("--store", args.work / "a", "build", "--uv-cache", cache, project)
        push = venvseal("--store", args.work / "a", "cache", "push", "--to", url,
                        "--uv-cache", cache, project)
        full, hit = [], []
        for i in range(args.runs):
            full.append(venvseal("--store", args.work / f"full-{i}", "build", "--uv-cache",
                                 cache, project))
            hit.append(venvseal("--store", args.work / f"hit-{i}", "build", "--uv-cache",
                                args.work / "unused-uv-cache", "--substituter", url, project))
            remove(args.work / f"full-{i}")
            remove(args.work / f"hit-{i}")
    finally:
        proc.terminate()
        proc.wait()
    base = statistics.median(full)
    print(f"project: {args.project.name}; {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.2f}; one cache push took {push:.2f} s")
    print("\n| venvseal build (fresh store) | median | vs full build |")
    print("|---|---|---|")
    print(row("full (warm uv cache)", full, base))
    print(row("cache hit (--substituter)", hit, base))
    remove(args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
