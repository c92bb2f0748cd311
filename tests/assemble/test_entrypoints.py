"""Entry-point scripts: read from a fake site-packages, written, and actually run."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from venvseal.assemble.entrypoints import (
    EntryPoint,
    EntryPointError,
    launcher,
    read_entry_points,
    write_scripts,
)

TOOLS_EP = """\
[console_scripts]
hello = greet.cli:main
Upper-Case = greet.cli:Commands.shout [color]

[gui_scripts]
hello-gui = greet.gui:run

[other.group]
ignored = not a script at all

[DEFAULT]
not-a-script = os:system
"""

EXIT_EP = """\
[console_scripts]
fail = exiter:main
"""


def dist(site: Path, folder: str, entry_points: str) -> Path:
    info = site / folder
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return info


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site-packages"
    (site / "greet").mkdir(parents=True)
    (site / "greet" / "__init__.py").write_text("")
    (site / "greet" / "cli.py").write_text(textwrap.dedent("""\
        import sys

        def main():
            print("hello from", sys.argv[0].rsplit("/", 1)[-1], *sys.argv[1:])
            return 3

        class Commands:
            @staticmethod
            def shout():
                print("HELLO")
    """))
    (site / "greet" / "gui.py").write_text("def run():\n    print('gui')\n")
    (site / "exiter.py").write_text("def main():\n    return 'bye'\n")
    dist(site, "Greet_Tools-1.0.dist-info", TOOLS_EP)
    dist(site, "exiter-2.0.dist-info", EXIT_EP)
    (site / "no_scripts-1.0.dist-info").mkdir()
    return site


def test_read_entry_points_sorted_by_name(site: Path) -> None:
    assert read_entry_points(site) == (
        EntryPoint(name="Upper-Case", module="greet.cli", attr="Commands.shout",
                   kind="console", distribution="greet-tools"),
        EntryPoint(name="fail", module="exiter", attr="main", kind="console",
                   distribution="exiter"),
        EntryPoint(name="hello", module="greet.cli", attr="main", kind="console",
                   distribution="greet-tools"),
        EntryPoint(name="hello-gui", module="greet.gui", attr="run", kind="gui",
                   distribution="greet-tools"),
    )


def run_script(script: Path, site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(site)}
    return subprocess.run([str(script), *args], env=env, capture_output=True, text=True,
                          check=False)


def test_scripts_are_written_executable_and_run(site: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    written = write_scripts(bin_dir, read_entry_points(site), python=sys.executable)
    assert [p.name for p in written] == ["Upper-Case", "fail", "hello", "hello-gui"]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
    hello = run_script(bin_dir / "hello", site, "a", "b")
    assert (hello.stdout, hello.returncode) == ("hello from hello a b\n", 3)
    shout = run_script(bin_dir / "Upper-Case", site)
    assert (shout.stdout, shout.returncode) == ("HELLO\n", 0)
    assert run_script(bin_dir / "hello-gui", site).stdout == "gui\n"
    fail = run_script(bin_dir / "fail", site)  # sys.exit("bye"): message on stderr, status 1
    assert (fail.stderr, fail.returncode) == ("bye\n", 1)


def test_launcher_text_is_exact(tmp_path: Path) -> None:
    point = EntryPoint(name="x", module="pkg.mod", attr="a.b", kind="console", distribution="d")
    assert launcher(point, "/venvseal/store/abc-app/bin/python") == textwrap.dedent("""\
        #!/venvseal/store/abc-app/bin/python
        import sys
        from pkg.mod import a
        if __name__ == "__main__":
            if sys.argv[0].endswith("-script.pyw"):
                sys.argv[0] = sys.argv[0][:-11]
            elif sys.argv[0].endswith(".exe"):
                sys.argv[0] = sys.argv[0][:-4]
            sys.exit(a.b())
    """)


def test_module_without_attribute_runs_as_main(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "tool.py").write_text("import sys\nif __name__ == '__main__':\n    sys.exit(7)\n")
    dist(site, "tool-1.dist-info", "[console_scripts]\ntool = tool\n")
    points = read_entry_points(site)
    assert points[0].attr is None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_scripts(bin_dir, points, python=sys.executable)
    assert run_script(bin_dir / "tool", site).returncode == 7


def test_same_script_in_two_distributions(site: Path) -> None:
    dist(site, "zz_other-0.1.dist-info", "[gui_scripts]\nhello = other:main\n")
    with pytest.raises(EntryPointError, match=r"script 'hello': defined by distribution "
                                              r"greet-tools and by zz-other"):
        read_entry_points(site)


@pytest.mark.parametrize(("entry_points", "message"), [
    ("[console_scripts]\nbad = 1mod:main\n", r"'1mod' is not a dotted Python module name"),
    ("[console_scripts]\nbad = mod:ma-in\n", r"bad = 'mod:ma-in': 'ma-in' is not a dotted"),
    ("[console_scripts]\nbad = mod:class\n", r"'class' is not a dotted Python attribute"),
    ("[console_scripts]\nbad = os;rm:x\n", r"'os;rm' is not a dotted Python module"),
    ("[console_scripts]\nbad = mod..x:main\n", r"'mod\.\.x' is not a dotted"),
    ("[console_scripts]\nbad =\n", r"'' is not a dotted Python module"),
    ("[console_scripts]\nbad = mod:\n", r"'' is not a dotted Python attribute"),
    ("[console_scripts]\nbad = mod:main [x] junk\n", r"'main \[x\] junk' is not a dotted"),
    ("[console_scripts]\nno equals sign\n", r"cannot be read"),
    ("bad = mod:main\n", r"cannot be read"),
    ("[console_scripts]\na = m:f\na = m:g\n", r"cannot be read.*'a'"),
])
def test_malformed_entry_points_name_the_distribution(tmp_path: Path, entry_points: str,
                                                      message: str) -> None:
    site = tmp_path / "site"
    dist(site, "Bad.Dist-1.0.dist-info", entry_points)
    with pytest.raises(EntryPointError, match=message) as err:
        read_entry_points(site)
    assert "(distribution bad-dist)" in str(err.value)
    assert "Bad.Dist-1.0.dist-info/entry_points.txt" in str(err.value)


@pytest.mark.parametrize("name", ["../evil", "sub/x", ".hidden", "", " padded"])
def test_script_names_that_are_not_file_names_are_refused(tmp_path: Path, name: str) -> None:
    point = EntryPoint(name=name, module="m", attr="f", kind="console", distribution="evil-dist")
    with pytest.raises(EntryPointError, match=r"of distribution evil-dist: is not a plain file"):
        write_scripts(tmp_path, [point], python=sys.executable)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "python3").symlink_to("/usr/bin/python3")
    point = EntryPoint(name="python3", module="m", attr="f", kind="console", distribution="d")
    with pytest.raises(EntryPointError, match="exists already"):
        write_scripts(tmp_path, [point], python=sys.executable)
    assert os.readlink(tmp_path / "python3") == "/usr/bin/python3"


@pytest.mark.parametrize("python", ["python3", "/path with space/python", "/" + "p" * 200])
def test_interpreter_must_fit_a_shebang(tmp_path: Path, python: str) -> None:
    point = EntryPoint(name="x", module="m", attr="f", kind="console", distribution="d")
    with pytest.raises(EntryPointError, match="cannot go on a shebang line"):
        write_scripts(tmp_path, [point], python=python)


def test_scripts_are_byte_for_byte_reproducible(site: Path, tmp_path: Path) -> None:
    outputs = []
    for umask, folder in ((0o022, "a"), (0o077, "b")):
        (tmp_path / folder).mkdir()
        old = os.umask(umask)
        try:
            paths = write_scripts(tmp_path / folder, read_entry_points(site), python="/p/python")
        finally:
            os.umask(old)
        outputs.append([(p.name, p.read_bytes(), p.stat().st_mode) for p in paths])
    assert outputs[0] == outputs[1]
    assert all(b"\r" not in content for _, content, _ in outputs[0])
