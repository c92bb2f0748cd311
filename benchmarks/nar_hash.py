"""Benchmark: venvseal's NAR hashing against ``nix-hash --type sha256`` on the same tree.

What it measures
    Wall time and peak resident memory of two processes hashing the same directory tree:
    ``python -c 'nar_hash(PATH)'`` (venvseal.nar from this checkout, interpreter start-up and
    imports included) and ``nix-hash --type sha256 PATH`` (Nix's C++). Peak RSS is each
    child's ``ru_maxrss`` from ``os.wait4``, read by a small launcher the child is forked from
    (see LAUNCHER); the launcher's own RSS, printed as the floor, is the least it can show.
    After one warm-up run of each (which also fills the page cache, so both read from memory,
    not disk), runs alternate ours, theirs, ours, theirs... so drift in machine load hits both
    alike. It reports medians and the ratio ours/theirs, and fails (exit 1) if the two hashes
    differ. The load average is printed too: venvseal hashes on a second thread, so on a busy
    machine with few CPUs it loses more of its edge than single-threaded nix-hash does.

Targets (venvseal's issue): ratio at most 1.0 on a ~580 MB, ~31k-file tree; peak RSS under
64 MB. ``--enforce`` turns a missed target into exit 1 as well.

The tree
    ``--tree PATH`` hashes an existing tree (for example a real venv). Without it a synthetic
    tree shaped like a Python 3.14 venv of authentik's dependencies is generated once,
    deterministically, under ``--cache`` (default /var/tmp/venvseal-bench): ~31,000 files and
    ~580 MB, in ~240 packages of nested directories with ``.dist-info`` metadata; most files
    are small ``.py`` sources of a few KB (log-normal sizes), ~60 are executable extension
    modules of 0.3-42 MB, and ``bin/`` holds executable scripts and interpreter symlinks.

Usage: ``.venv/bin/python benchmarks/nar_hash.py [--tree PATH] [--runs N] [--cache DIR]``
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Bump when the generator changes, so a cached tree of the old shape is not reused.
TREE_VERSION = "v2"
SEED = 20260314
TARGET_FILES = 31_000
TARGET_BYTES = 580 * 10**6
TARGET_RATIO = 1.0
TARGET_RSS_MB = 64.0
# Extension modules of tens of MB down to a few hundred KB, as in grpc, cryptography, uvloop,
# lxml, pydantic-core, orjson and the bundled *.libs of manylinux wheels (sizes in MB).
LARGE_SO_MB = (
    *(42, 35, 28, 24, 19, 16, 14, 12, 11, 10, 9, 8, 7.5, 7, 6, 5.5, 5, 4.5, 4, 4),
    *(3.5, 3, 3, 2.5, 2.5, 2, 2, 2, 1.5, 1.5, 1.5, 1.2, 1, 1, 1, 0.9, 0.8, 0.8, 0.7),
    *(0.7, 0.6, 0.6, 0.5, 0.5, 0.5, 0.45, 0.4, 0.4, 0.4, 0.35, 0.3, 0.3, 0.3, 0.3),
    *(0.3, 0.3, 0.3, 0.3, 0.3, 0.3),
)

OURS_SNIPPET = (
    "import sys\nfrom venvseal.store.nar import nar_hash\n"
    "print(nar_hash(sys.argv[1]).hash.base16)\n"
)


@dataclass(frozen=True)
class Run:
    """One timed child process."""

    seconds: float
    peak_rss_mb: float
    output: str


# Linux starts a child's ru_maxrss at the RSS of the process it was forked (or vforked) from,
# and keeps it across exec: spawned straight from this script, both hashers would report at
# least this script's own peak. So each one is forked from a small, fresh launcher, which
# times it and reports its wait4 rusage on the last line of stdout.
LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
sys.stdout.flush()
print(os.waitstatus_to_exitcode(status), seconds, usage.ru_maxrss)
"""


def run_measured(argv: list[str], env: dict[str, str] | None = None) -> Run:
    """Run ``argv`` via the launcher; return its wall time, peak RSS and stdout."""
    launcher = [sys.executable, "-S", "-c", LAUNCHER, *argv]
    out = subprocess.run(launcher, stdout=subprocess.PIPE, env=env, text=True, check=True)
    *output, measured = out.stdout.splitlines()
    code, seconds, maxrss_kib = measured.split()
    if code != "0":
        raise SystemExit(f"{' '.join(argv)} failed with exit {code}")
    return Run(float(seconds), int(maxrss_kib) / 1024, "\n".join(output).strip())


def small_file_sizes(rng: random.Random, count: int, total: int) -> list[int]:
    """``count`` log-normal sizes (median a few KB, long tail), scaled to sum to ``total``."""
    raw = [min(rng.lognormvariate(8.0, 1.25), 2_000_000) for _ in range(count)]
    scale = total / sum(raw)
    sizes = [int(s * scale) for s in raw]
    sizes[0] += total - sum(sizes)
    return sizes


def package_file_counts(rng: random.Random, packages: int, total: int) -> list[int]:
    """Files per package, Pareto-shaped (a few packages like Django hold thousands)."""
    weights = [rng.paretovariate(1.1) for _ in range(packages)]
    scale = total / sum(weights)
    counts = [max(1, int(w * scale)) for w in weights]
    counts[0] += total - sum(counts)
    return counts


def package_dirs(rng: random.Random, name: str, files: int) -> list[str]:
    """Subpackage directories, up to 6 deep, one per ~9 files (as in real site-packages)."""
    dirs = [name]
    top = name.count("/")
    for i in range(files // 9):
        parent = rng.choice(dirs)
        if parent.count("/") - top < 6:
            dirs.append(f"{parent}/sub{i:03d}")
    return dirs


class TreeWriter:
    """Writes files whose bytes are slices of one seeded random pool (content is irrelevant to
    hashing speed, but must be deterministic)."""

    POOL = 8 << 20

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.pool = rng.randbytes(self.POOL)
        self.offset = 0

    def file(self, rel: str, size: int, executable: bool = False) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            left = size
            while left:
                take = min(left, self.POOL - self.offset)
                f.write(self.pool[self.offset : self.offset + take])
                self.offset = (self.offset + take) % self.POOL
                left -= take
        os.chmod(path, 0o755 if executable else 0o644)

    def symlink(self, rel: str, target: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)


def generate_tree(root: Path) -> None:
    """Write the synthetic authentik-like venv into ``root`` (which must not exist)."""
    rng = random.Random(SEED)
    writer = TreeWriter(root, rng)
    site = "lib/python3.14/site-packages"
    for script in ["python3.14"] + [f"script-{i:02d}" for i in range(30)]:
        writer.file(f"bin/{script}", 400 if script.startswith("s") else 8_000, executable=True)
    writer.symlink("bin/python", "python3.14")
    writer.symlink("bin/python3", "python3.14")
    writer.symlink("lib64", "lib")
    writer.file("pyvenv.cfg", 180)
    packages = 240
    dist_info_files = 6
    fixed = 31 + 1 + len(LARGE_SO_MB) + packages * dist_info_files
    counts = package_file_counts(rng, packages, TARGET_FILES - fixed - 3)
    large_bytes = sum(int(mb * 10**6) for mb in LARGE_SO_MB)
    sizes = iter(
        small_file_sizes(
            rng, sum(counts) + packages * dist_info_files, TARGET_BYTES - large_bytes - 31 * 8_000
        )
    )
    all_dirs: list[str] = []
    for p, count in enumerate(counts):
        name = f"pkg{p:03d}"
        dirs = package_dirs(rng, f"{site}/{name}", count)
        all_dirs.extend(dirs)
        for i in range(count):
            directory = dirs[0] if i == 0 else rng.choice(dirs)
            stem = "__init__" if i == 0 else f"mod{i:04d}"
            writer.file(f"{directory}/{stem}.py", next(sizes))
        for meta in ("METADATA", "RECORD", "WHEEL", "INSTALLER", "top_level.txt", "LICENSE"):
            writer.file(f"{site}/{name}-1.0.dist-info/{meta}", next(sizes))
    for i, mb in enumerate(LARGE_SO_MB):
        directory = rng.choice(all_dirs)
        writer.file(
            f"{directory}/_ext{i:02d}.cpython-314-x86_64-linux-gnu.so",
            int(mb * 10**6),
            executable=True,
        )


def cached_tree(cache: Path) -> Path:
    """The synthetic tree under ``cache``, generated on first use (atomically, by rename)."""
    final = cache / f"tree-{TREE_VERSION}"
    if final.is_dir():
        return final / "venv"
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f"tree-{TREE_VERSION}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    print(f"generating the synthetic tree in {final} (once)...", file=sys.stderr)
    generate_tree(partial / "venv")
    partial.rename(final)
    return final / "venv"


def tree_facts(tree: Path) -> tuple[int, int, int]:
    """Regular files, their bytes, and symlinks under ``tree``."""
    files = size = links = 0
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                links += 1
            elif name in filenames:
                files += 1
                size += os.lstat(path).st_size
    return files, size, links


def nix_hash_version() -> str:
    out = subprocess.run(["nix-hash", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def measure(tree: Path, runs: int, cache: Path) -> tuple[list[Run], list[Run]]:
    """One warm-up of each, then ``runs`` alternating runs of ours and nix-hash."""
    # An installed venvseal runs from cached bytecode; let the warm-up write it (outside the
    # checkout) even where PYTHONDONTWRITEBYTECODE is set, so runs do not time the compiler.
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONPYCACHEPREFIX=str(cache / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    ours_argv = [sys.executable, "-c", OURS_SNIPPET, str(tree)]
    theirs_argv = ["nix-hash", "--type", "sha256", str(tree)]
    run_measured(ours_argv, env)
    run_measured(theirs_argv)
    ours: list[Run] = []
    theirs: list[Run] = []
    for _ in range(runs):
        ours.append(run_measured(ours_argv, env))
        theirs.append(run_measured(theirs_argv))
    return ours, theirs


def table_row(label: str, runs: list[Run]) -> str:
    times = [r.seconds for r in runs]
    return (
        f"| {label} | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} "
        f"| {max(r.peak_rss_mb for r in runs):.1f} |"
    )


def report(tree: Path, ours: list[Run], theirs: list[Run], load: tuple[float, ...]) -> None:
    """Print the Markdown table, the ratio and the machine facts."""
    files, size, links = tree_facts(tree)
    ratio = statistics.median(r.seconds for r in ours) / statistics.median(
        r.seconds for r in theirs
    )
    floor = run_measured(["true"]).peak_rss_mb
    print(f"Tree: {tree} ({files} files, {size / 1e6:.0f} MB, {links} symlinks)\n")
    print("| hasher | median wall (s) | min (s) | max (s) | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|")
    print(table_row(f"venvseal `nar_hash` (Python {platform.python_version()})", ours))
    print(table_row("`nix-hash --type sha256`", theirs))
    print(
        f"\nRatio venvseal / nix-hash (median wall): **{ratio:.2f}x**, over {len(ours)} "
        "interleaved runs each after one warm-up, page cache warm."
    )
    print(
        f"\nMachine: {os.cpu_count()} CPUs ({platform.machine()}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, {nix_hash_version()}; load average "
        f"{load[0]:.2f} before and {os.getloadavg()[0]:.2f} after; RSS floor "
        f"(launcher running `true`) {floor:.1f} MB."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tree", type=Path, help="hash this tree instead of the synthetic one")
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each (default 7)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("/var/tmp/venvseal-bench"),
        help="where the synthetic tree is kept (default /var/tmp/venvseal-bench)",
    )
    parser.add_argument(
        "--enforce",
        action="store_true",
        help=f"exit 1 if ratio > {TARGET_RATIO} or our peak RSS >= {TARGET_RSS_MB:.0f} MB",
    )
    args = parser.parse_args(argv)
    if shutil.which("nix-hash") is None:
        print("nix-hash not found; install nix-bin (apt-get install nix-bin)", file=sys.stderr)
        return 1
    tree = args.tree if args.tree else cached_tree(args.cache)
    load = os.getloadavg()
    ours, theirs = measure(tree, args.runs, args.cache)
    report(tree, ours, theirs, load)
    hashes = {r.output for r in ours} | {r.output for r in theirs}
    print(f"\nHash: {', '.join(sorted(hashes))}")
    if len(hashes) != 1:
        print("\nFAIL: venvseal and nix-hash disagree on the hash", file=sys.stderr)
        return 1
    ratio = statistics.median(r.seconds for r in ours) / statistics.median(
        r.seconds for r in theirs
    )
    rss = max(r.peak_rss_mb for r in ours)
    met = ratio <= TARGET_RATIO and rss < TARGET_RSS_MB
    print(
        f"\nTargets (ratio <= {TARGET_RATIO}, peak RSS < {TARGET_RSS_MB:.0f} MB): "
        f"{'met' if met else 'NOT met'}"
    )
    return 1 if args.enforce and not met else 0


if __name__ == "__main__":
    sys.exit(main())
