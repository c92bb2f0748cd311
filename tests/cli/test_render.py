"""What the CLI prints: the default store, errors as problems (JSON) and unfolded
tracebacks, tables when piped, a reader that leaves early, signals reaching the app."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support import venvseal, write

from venvseal.assemble.verify import VerifyError
from venvseal.cli.render import error_lines, stage_lines
from venvseal.cli.session import store_root
from venvseal.cli.ui import plain_table
from venvseal.errors import VenvsealError
from venvseal.hashes import parse_sha256
from venvseal.pipeline import BuildResult, DepsResult
from venvseal.store.core import PathInfo, StorePath

HOME = Path("/home/u")


@pytest.mark.parametrize(("env", "uid", "shared_is_mine", "expected"), [
    ({"VENVSEAL_STORE": "/s"}, 0, False, "/s"),
    ({"VENVSEAL_STORE": "/s"}, 1000, True, "/s"),
    ({}, 0, False, "{shared}"),
    ({}, 1000, True, "{shared}"),
    ({}, 1000, False, "/home/u/.local/share/venvseal/store"),
    ({"XDG_DATA_HOME": "/x"}, 1000, False, "/x/venvseal/store"),
])
def test_default_store_root(tmp_path: Path, env: dict[str, str], uid: int,
                            shared_is_mine: bool, expected: str) -> None:
    shared = tmp_path / "venvseal" / "store"  # stands for /venvseal/store
    if shared_is_mine:
        shared.mkdir(parents=True)
    assert store_root(env, HOME, uid=uid, shared=shared) == Path(expected.format(shared=shared))


# Each row: the recipe text, and the (key, message fragment) of every problem JSON lists.
JSON_PROBLEMS = [
    ("unknown key", '[app]\nname = "a"\nversion = "1"\n[deps]\nhsh = ""\n',
     [("deps.hsh", "did you mean 'hash'")]),
    ("two problems", '[app]\nname = 1\n[verify]\nimport = []\n',
     [("app.name", "expected a string"), ("app.version", "required"),
      ("verify.import", "unknown key")]),
    ("malformed", '[app]\nname = \n', [(None, "line 2")]),
]


@pytest.mark.parametrize(("case", "text", "expected"), JSON_PROBLEMS,
                         ids=[r[0] for r in JSON_PROBLEMS])
def test_json_errors_are_problems_with_file_key_and_message(
        tmp_path: Path, case: str, text: str, expected: list[tuple[str | None, str]]) -> None:
    recipe = write(tmp_path / "venvseal.toml", text)
    run = venvseal("--json", "show", str(tmp_path))
    doc = json.loads(run.out)
    assert run.code == 2 and doc["ok"] is False
    got = doc["problems"]
    assert all(set(p) == {"file", "key", "message"} for p in got)
    assert all(p["file"] == str(recipe) for p in got)
    assert [p["key"] for p in got] == [key for key, _ in expected]
    for problem, (_key, fragment) in zip(got, expected, strict=True):
        assert fragment in problem["message"] and "\n" not in problem["message"]


def test_json_error_without_a_file_has_nulls(tmp_path: Path) -> None:
    run = venvseal("--json", "hash", str(tmp_path / "missing"))
    problems = json.loads(run.out)["problems"]
    assert len(problems) == 1 and problems[0]["file"] is None and problems[0]["key"] is None
    assert "missing" in problems[0]["message"]


@pytest.mark.parametrize(("err", "message", "expected"), [
    (VerifyError("x"), "verify: 1 import(s) failed in the closure:\n  hello File \"a.py\", "
     "line 1, in <module> | import nope | ModuleNotFoundError: No module named 'nope'",
     ["verify: 1 import(s) failed in the closure:", "  hello:", '      File "a.py", line 1, '
      "in <module>", "      import nope", "      ModuleNotFoundError: No module named 'nope'"]),
    (VerifyError("x"), "verify: failed:\n  mod\n    Traceback (most recent call last):",
     ["verify: failed:", "  mod", "    Traceback (most recent call last):"]),
    (VenvsealError("x"), "a | b", ["a | b"]),  # only verify's output is unfolded
])
def test_failed_imports_are_shown_as_indented_tracebacks(
        err: BaseException, message: str, expected: list[str]) -> None:
    assert error_lines(err, message) == expected


def test_piped_tables_are_not_wrapped() -> None:
    long = "x" * 300
    lines = plain_table(("path", "size", "why"), [("/usr/lib/" + long, "1 KiB", "needed by a"),
                                                 ("/b", "12 MiB", "why " * 40)])
    assert lines[0].split() == ["path", "size", "why"]
    assert len(lines) == 3 and lines[1].startswith("/usr/lib/" + long)
    assert lines[2].index("12 MiB") == lines[1].index("1 KiB")  # aligned


def test_a_reader_that_leaves_early_is_not_an_error(tmp_path: Path) -> None:
    write(tmp_path / "f", "x")
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head` that has read enough
    try:
        done = subprocess.run([sys.executable, "-m", "venvseal", "hash", str(tmp_path)],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, check=False)
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert "BrokenPipe" not in done.stderr and "internal error" not in done.stderr
    assert "Exception ignored" not in done.stderr


APP = textwrap.dedent("""\
    import signal, sys, time
    def stop(signum, frame):
        print("app: graceful stop on", signum, flush=True)
        sys.exit(7)
    signal.signal(signal.SIGTERM, stop)
    print("app: ready", flush=True)
    time.sleep(60)
    """)
RUNNER = textwrap.dedent("""\
    import sys
    from pathlib import Path
    from venvseal.cli import foreground
    from venvseal.toolchain import sandbox as sb
    spec = sb.SandboxSpec(root=Path("/"), env=sb.fixed_env([sb.PurePosixPath("/usr/bin")]))
    with sb.identity_fds() as ids:
        argv = sb.bwrap_argv(sb.Sandbox.locate().bwrap, spec,
                             ["/usr/bin/python3", "-c", sys.argv[1]], identity=ids)
        sys.exit(foreground.call(argv, pass_fds=(ids.passwd, ids.group)))
    """)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signals_reach_the_sandboxed_app(signum: int) -> None:
    app = APP.replace("signal.SIGTERM, stop", f"{int(signum)}, stop")
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, app], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "app: ready\n"
    time.sleep(0.2)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=30)
    assert out == f"app: graceful stop on {int(signum)}\n"
    assert proc.returncode == 7  # the app's own status


def _result(*, deps_reused: bool, reused: bool, relinked: str = "r1",
            fetched: tuple[str, ...] = (), substituted: tuple[str, ...] = ()) -> BuildResult:
    def sp(name: str) -> StorePath:
        return StorePath(Path(f"/s/{name}"))

    digest = parse_sha256("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
    return BuildResult(path=sp("app-1"), deps=DepsResult(path=sp("deps"), hash=digest,
                                                         reused=deps_reused),
                       relinked=sp(relinked), fetched=tuple(map(sp, fetched)), reused=reused,
                       substituted=tuple(map(sp, substituted)))


def _info(name: str, *refs: str) -> PathInfo:
    digest = parse_sha256("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
    return PathInfo(path=StorePath(Path(f"/s/{name}")), nar_hash=digest, nar_size=1,
                    references=tuple(StorePath(Path(f"/s/{r}")) for r in refs))


# Each row: the build, the closure the out-link named before, the lines expected.
STAGE_LINES = [
    ("all reused", _result(deps_reused=True, reused=True), None,
     ["deps: reused deps (its inputs are unchanged)",
      "closure: reused app-1 (its inputs are unchanged)"]),
    ("first build", _result(deps_reused=False, reused=False), None,
     ["deps: built deps because uv.lock, pyproject.toml, [deps] or the toolchain changed",
      "closure: built app-1 because its inputs are new to this store"]),
    ("app edit", _result(deps_reused=True, reused=False), _info("app-0", "r1"),
     ["deps: reused", "closure: built app-1 because the app's files or the recipe changed "
      "(the dependencies are the same as app-0's)"]),
    ("new dependencies", _result(deps_reused=False, reused=False, relinked="r2"),
     _info("app-0", "r1"), ["closure: built app-1 because the dependencies changed (its "
                            "relinked deps are now r2; app-0 had others)"]),
    ("new fetch", _result(deps_reused=True, reused=False, fetched=("f2",)),
     _info("app-0", "r1", "f1"), ["closure: built app-1 because a [[fetch]] source changed"]),
    ("from a cache", _result(deps_reused=True, reused=True, fetched=("f1",),
                             substituted=("app-1", "f1")), None,
     ["deps: reused", "fetch: fetched f1 from a cache", "closure: fetched app-1 from a cache"]),
]


@pytest.mark.parametrize(("case", "res", "previous", "expected"), STAGE_LINES,
                         ids=[r[0] for r in STAGE_LINES])
def test_each_stage_says_reused_or_why_it_ran(case: str, res: BuildResult,
                                              previous: PathInfo | None,
                                              expected: list[str]) -> None:
    lines = stage_lines(res, previous)
    for fragment in expected:
        assert any(line.startswith(fragment) for line in lines), (fragment, lines)
