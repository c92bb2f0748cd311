"""The command line: exit codes, one-line errors without tracebacks, JSON, and each command."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from venvseal.cli.main import main
from venvseal.store.core import Store

VALID = """\
[app]
name = "demo"
version = "1.0"
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def store_snapshot(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".locks" not in p.parts)


# Each row: what the user did wrong, the files to write, the arguments, the expected exit code
# and fragments the single error line must contain.
BAD_INPUT = [
    ("malformed TOML", {"venvseal.toml": '[app]\nname = "x"\nversion = \n'},
     ["show", "{dir}"], 2, ["venvseal.toml", "line 3, column"]),
    ("unknown key", {"venvseal.toml": VALID + '[deps]\nhsh = ""\n'},
     ["show", "{dir}"], 2, ["deps.hsh", "did you mean 'hash'"]),
    ("wrong type", {"venvseal.toml": '[app]\nname = "x"\nversion = 3\n'},
     ["show", "{dir}"], 2, ["app.version", "expected a string"]),
    ("missing required key", {"venvseal.toml": '[app]\nname = "x"\n'},
     ["show", "{dir}"], 2, ["app.version", "required"]),
    ("recipe not found", {"README": "nothing here\n"},
     ["show", "{dir}"], 2, ["no venvseal.toml", "pyproject.toml"]),
    ("recipe file missing", {}, ["show", "{dir}/nope.toml"], 2, ["nope.toml"]),
    ("hash in a wrong format", {"venvseal.toml": VALID + '[deps]\nhash = "md5-abc"\n'},
     ["show", "{dir}"], 2, ["deps.hash", "SRI"]),
    ("store is a file", {"storefile": "x"}, ["--store", "{dir}/storefile", "verify"], 2,
     ["storefile", "not a directory", "--store"]),
    ("store under a file", {"storefile": "x"}, ["--store", "{dir}/storefile/s", "gc"], 2,
     ["not writable", "VENVSEAL_STORE"]),
    ("hash of a missing path", {}, ["hash", "{dir}/missing"], 2, ["missing"]),
    ("verify a path outside the store", {"elsewhere/f": "x"},
     ["--store", "{dir}/store", "verify", "{dir}/elsewhere"], 2, ["not a path in the store"]),
    ("unknown option", {}, ["hash", "--frobnicate", "{dir}"], 2, ["--frobnicate", "--help"]),
    ("bad --format", {}, ["hash", "--format", "hex", "{dir}"], 2, ["invalid choice"]),
    ("--env without a value", {"venvseal.toml": VALID}, ["run", "{dir}", "--env", "FOO", "--",
     "true"], 2, ["--env", "'FOO' is not KEY=VALUE"]),
]


@pytest.mark.parametrize(("case", "files", "argv", "code", "fragments"), BAD_INPUT,
                         ids=[row[0] for row in BAD_INPUT])
def test_bad_input_gives_one_clear_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, files: dict[str, str],
        argv: list[str], code: int, fragments: list[str]) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    Store(tmp_path / "store").close()
    before = store_snapshot(tmp_path / "store")
    got, out, err = run(capsys, *[a.format(dir=tmp_path) for a in argv])
    assert got == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("venvseal: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in err and out == ""
    assert store_snapshot(tmp_path / "store") == before


def test_several_recipe_problems_are_reported_together(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "venvseal.toml", '[app]\nname = 1\n[deps]\nhsh = ""\n[verify]\nimport = []\n')
    code, _out, err = run(capsys, "show", str(tmp_path))
    assert code == 2
    assert {"app.name", "app.version", "deps.hsh", "verify.import"} <= {
        line.split(": ")[3] for line in err.splitlines()}


def test_verbose_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "-v", "hash", str(tmp_path / "missing"))
    assert code == 2
    assert "Traceback" in err and "venvseal: error:" in err


def test_json_errors_are_machine_readable(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(capsys, "hash", "--json", str(tmp_path / "missing"))
    doc = json.loads(out)
    assert code == 2 and doc["ok"] is False and doc["exit_code"] == 2
    assert "missing" in doc["error"]


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys)
    assert code == 2 and "COMMAND" in err


@pytest.mark.parametrize("fmt", ["sri", "nix32", "base16"])
def test_hash_matches_nix_hash(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               fmt: str) -> None:
    tree = tmp_path / "tree"
    write(tree / "a" / "file.txt", "hello\n")
    (tree / "a" / "file.txt").chmod(0o755)
    (tree / "link").symlink_to("a/file.txt")
    (tree / "empty").mkdir()
    code, out, _err = run(capsys, "hash", "--format", fmt, str(tree))
    assert code == 0
    nix_args = {"sri": [], "nix32": ["--base32"], "base16": []}[fmt]
    expected = subprocess.run(["nix-hash", "--type", "sha256", *nix_args, str(tree)],
                              capture_output=True, text=True, check=True).stdout.strip()
    if fmt == "sri":  # nix-hash 2.8 has no --sri: write its base16 digest as SRI here
        expected = "sha256-" + base64.b64encode(bytes.fromhex(expected)).decode()
    assert out.strip() == expected


def test_hash_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "f", "x")
    code, out, _err = run(capsys, "--json", "hash", str(tmp_path))
    doc = json.loads(out)
    assert code == 0 and doc["hash"].startswith("sha256-") and len(doc["nix32"]) == 52
    assert doc["files"] == 1


def _add(store: Store, name: str, text: str) -> Path:
    def produce(out: Path) -> None:
        write(out / "data.txt", text)

    return store.add(store.make_path(name, text), produce).path


def test_verify_names_the_changed_path(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with Store(tmp_path / "store") as store:
        good = _add(store, "good", "fine")
        bad = _add(store, "bad", "original")
    os.chmod(bad, 0o755)
    os.chmod(bad / "data.txt", 0o644)
    (bad / "data.txt").write_text("tampered")
    code, out, _err = run(capsys, "--store", str(tmp_path / "store"), "verify")
    assert code == 1
    assert f"changed: {bad}" in out and str(good) not in out
    assert "2 path(s) checked, 1 changed" in out
    code, out, _err = run(capsys, "--store", str(tmp_path / "store"), "verify", str(good))
    assert code == 0


def test_gc_reports_what_it_freed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Store(tmp_path / "store") as store:
        kept = _add(store, "kept", "k" * 5000)
        dropped = _add(store, "dropped", "d" * 5000)
        store.add_root(tmp_path / "result", kept)  # type: ignore[arg-type]
    code, out, _err = run(capsys, "--store", str(tmp_path / "store"), "gc", "--dry-run")
    assert code == 0 and f"would delete {dropped}" in out and dropped.exists()
    code, out, _err = run(capsys, "--json", "--store", str(tmp_path / "store"), "gc")
    doc = json.loads(out)
    assert doc["deleted"] == [str(dropped)] and doc["freed_bytes"] > 0
    assert kept.exists() and not dropped.exists()


def test_show_prints_the_recipe_as_json(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "venvseal.toml", VALID)
    code, out, _err = run(capsys, "show", "--json", str(tmp_path))
    doc = json.loads(out)
    assert code == 0 and doc["app"]["name"] == "demo"


def test_console_script_runs(tmp_path: Path) -> None:
    exe = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "venvseal"
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("venvseal ")
