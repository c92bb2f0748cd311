"""The command line explains itself: description, command order, help on every argument,
and the grammar of run's options; table-driven."""

from __future__ import annotations

import argparse
from pathlib import Path, PurePosixPath

import pytest
from support import venvseal

from venvseal.cli.parser import build_parser, parse_bind
from venvseal.operations import Bind


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_help_describes_venvseal_not_the_module() -> None:
    run = venvseal("--help")
    assert run.code == 0
    assert "hermetic, hash-pinned closure" in run.out
    assert "The command line: parse" not in run.out and "only place" not in run.out
    assert "venvseal init" in run.out and "first steps" in run.out


def test_commands_come_in_the_order_people_use_them() -> None:
    names = [n for n in _subcommands(build_parser()) if n != "verify"]  # alias
    assert names[:6] == ["init", "show", "lock", "deps", "build", "run"]
    assert names.index("shell") < names.index("image") < names.index("push")
    # store maintenance last
    assert names[-4:] == ["store-verify", "repair", "gc", "hash"]


def test_every_argument_of_every_command_has_help() -> None:
    missing = []
    for name, sub in _subcommands(build_parser()).items():
        for nested in [sub, *_subcommands(sub).values()] if name == "cache" else [sub]:
            for action in nested._actions:
                if not isinstance(action, argparse._SubParsersAction) and not action.help:
                    missing.append(f"{nested.prog}: {action.dest}")
    assert missing == []


def test_store_verify_is_told_apart_from_the_recipes_verify_checks() -> None:
    run = venvseal("--help")
    line = next(ln for ln in run.out.splitlines() if "store-verify" in ln)
    assert "(verify)" in line  # the old name still works
    own = " ".join(venvseal("store-verify", "--help").out.split())
    assert "store integrity" in own and "not the recipe's [verify] checks" in own
    assert venvseal("verify", "--help").out == venvseal("store-verify", "--help").out


@pytest.mark.parametrize(("text", "expected"), [
    ("{tmp}", Bind(host=Path("{tmp}"), target=PurePosixPath("{tmp}"))),
    ("{tmp}:/data", Bind(host=Path("{tmp}"), target=PurePosixPath("/data"))),
    ("{tmp}:/data:ro", Bind(host=Path("{tmp}"), target=PurePosixPath("/data"), writable=False)),
    ("{tmp}:/data:rw", Bind(host=Path("{tmp}"), target=PurePosixPath("/data"))),
])
def test_bind_reads_host_dest_and_mode(tmp_path: Path, text: str, expected: Bind) -> None:
    got = parse_bind(text.format(tmp=tmp_path))
    assert got == Bind(host=Path(str(expected.host).format(tmp=tmp_path)),
                       target=PurePosixPath(str(expected.target).format(tmp=tmp_path)),
                       writable=expected.writable)


BAD_RUN = [
    ("bind mode", ["--bind", "{tmp}:/data:rx"], ["HOST[:DEST[:ro]]"]),
    ("bind relative dest", ["--bind", "{tmp}:data"], ["must be an absolute path"]),
    ("bind missing host", ["--bind", "{tmp}/nope:/data"], ["does not exist"]),
    ("bind empty", ["--bind", ""], ["HOST[:DEST[:ro]]"]),
    ("env without =", ["--env", "FOO"], ["'FOO' is not KEY=VALUE"]),
    ("no command", [], ["give the command after '--'"]),
]


@pytest.mark.parametrize(("case", "argv", "fragments"), BAD_RUN, ids=[r[0] for r in BAD_RUN])
def test_bad_run_options_give_one_clear_line(tmp_path: Path, case: str, argv: list[str],
                                             fragments: list[str]) -> None:
    (tmp_path / "venvseal.toml").write_text('[app]\nname = "a"\nversion = "1"\n')
    tail = [] if case == "no command" else ["--", "true"]
    run = venvseal("run", str(tmp_path), *[a.format(tmp=tmp_path) for a in argv], *tail)
    assert run.code == 2
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("venvseal: error: "), run.err
    for fragment in fragments:
        assert fragment in lines[0]


def test_everything_after_the_dashes_is_the_command_verbatim() -> None:
    args = build_parser().parse_args(["run", "."])
    assert args.recipe == Path(".")
    # main() cuts at the first '--': options after it belong to the command
    from venvseal.cli.main import _split

    assert _split(["run", ".", "--", "python", "-V", "--", "-x"]) == (
        ["run", "."], ["python", "-V", "--", "-x"])


def test_only_run_takes_a_command_after_the_dashes(tmp_path: Path) -> None:
    run = venvseal("show", str(tmp_path), "--", "python")
    assert run.code == 2 and "takes nothing after '--'" in run.err
