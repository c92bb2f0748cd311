"""Benchmark: `venvseal build` when nothing changed, and after editing one app file.

What it measures, on a copy of a project (default: examples/demo), in one run:
    full      a build into a fresh store with a warm uv cache: the deps stage and the
              offline assembly both run (the baseline the others are compared with)
    no-op     the same build again: every input unchanged, nothing runs
    app edit  one app file changed (a comment appended to a module the recipe copies):
              the deps stage is reused, only the assembly and its checks run
Medians over --runs, and each as a ratio of the full build.

Targets (issue 4): no-op under 0.5 s; app edit under 5 s on the bundled example.

Usage: .venv/bin/python benchmarks/build.py [--project DIR] [--edit REL] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from deps_stage import remove  # the sibling script's: sealed store folders need chmod first

REPO = Path(__file__).resolve().parent.parent
VENVSEAL = REPO / ".venv" / "bin" / "venvseal"
UV = REPO / ".venv" / "bin" / "uv"


def prepare(project: Path, work: Path) -> Path:
    copy = work / "project"
    shutil.copytree(project, copy, symlinks=True,
                    ignore=shutil.ignore_patterns(".venv", "result", "build"))
    if (copy / "make-extras-repo").exists():
        subprocess.run([str(copy / "make-extras-repo")], check=True, stdout=subprocess.DEVNULL)
    if not (copy / "uv.lock").exists():
        subprocess.run([str(UV), "lock", "--quiet", "--python", "/usr/bin/python3.11"],
                       cwd=copy, check=True, env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})
    return copy


def venvseal(*argv: str | Path) -> float:
    """Wall seconds of one venvseal command (its output is discarded)."""
    start = time.perf_counter()
    subprocess.run([str(VENVSEAL), *map(str, argv)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def build(project: Path, store: Path, cache: Path) -> float:
    return venvseal("--store", store, "build", "--uv-cache", cache, project)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=REPO / "examples" / "demo")
    ap.add_argument("--edit", default="demo/settings.py", help="app file to edit (relative)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/venvseal-bench/build"))
    args = ap.parse_args()
    remove(args.work)
    args.work.mkdir(parents=True)
    project = prepare(args.project.resolve(), args.work)
    cache = args.work / "uv-cache"
    build(project, args.work / "warmup", cache)  # fills the uv cache
    full = []
    for i in range(max(2, args.runs // 2)):
        full.append(build(project, args.work / f"full-{i}", cache))
        remove(args.work / f"full-{i}")
    store = args.work / "store"
    build(project, store, cache)
    noop = [build(project, store, cache) for _ in range(args.runs)]
    edits = []
    target = project / args.edit
    for i in range(args.runs):
        with target.open("a", encoding="utf-8") as f:
            f.write(f"# edit {i}\n")
        edits.append(build(project, store, cache))
    med_full = statistics.median(full)
    print(f"project: {args.project.name}; {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.2f}")
    print("\n| venvseal build | median | vs full build | target |")
    print("|---|---|---|---|")
    print(f"| full (fresh store, warm uv cache; {len(full)} runs) | {med_full:.2f} s | 1.00 | - |")
    for label, times, goal in (("no-op", noop, "< 0.5 s"),
                               (f"app edit ({args.edit})", edits, "< 5 s")):
        med = statistics.median(times)
        print(f"| {label} ({len(times)} runs) | {med:.3f} s | {med / med_full:.2f} | {goal} |")
    remove(args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
