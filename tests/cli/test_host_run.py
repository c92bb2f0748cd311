"""A closure's bin/ scripts name /venvseal/store: they run on a host whose store is there
(root's default), and a build elsewhere says how to run the closure instead."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support import uv_lock, venvseal, venvseal_process

CACHE = Path(os.environ.get("VENVSEAL_TEST_CACHE", "/var/cache/venvseal-tests")) / "uv"


def as_host_with_store_at_venvseal(store: Path, argv: list[str], env: dict[str, str],
                                   cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` on this host's file system, but with ``store`` at /venvseal/store (a
    mount namespace of its own: the real / is not touched)."""
    args = ["bwrap", "--tmpfs", "/"]
    for entry in sorted(os.listdir("/")):
        path = Path("/", entry)
        if entry in ("proc", "dev", "venvseal"):
            continue
        if path.is_symlink():
            args += ["--symlink", str(path.readlink()), str(path)]
        elif path.is_dir():
            args += ["--bind", str(path), str(path)]
    args += ["--dev-bind", "/dev", "/dev", "--proc", "/proc",
             "--bind", str(store), "/venvseal/store", "--chdir", str(cwd), "--", *argv]
    return subprocess.run(args, env=env, capture_output=True, text=True, check=False)


def no_imports(app: Path) -> None:
    # The project's own package is installed by the assembly on main, not yet here: this
    # test is about a member's script, so the build checks no imports.
    recipe = app / "venvseal.toml"
    text = recipe.read_text()
    recipe.write_text(text[:text.index("[verify]")])


@pytest.mark.slow
def test_scripts_run_on_a_host_whose_store_is_at_venvseal_store(
        workspace_app: Path, tmp_path: Path) -> None:
    app = workspace_app
    uv_lock(app, CACHE)
    assert venvseal("init", app, "--no-hash").code == 0
    no_imports(app)
    run = venvseal("build", app, "--store", tmp_path / "store", "--uv-cache", CACHE,
                   "--update-hash", "--out-link", app / "result")
    assert run.code == 0, run.err
    assert (f"run it with: venvseal run {app} -- <command> (its bin/ scripts name "
            f"/venvseal/store, and this store is at {tmp_path / 'store'}") in run.err
    script = app / "result" / "bin" / "greet"
    assert script.read_text().startswith("#!/venvseal/store/")
    with pytest.raises(FileNotFoundError):  # the interpreter the shebang names is not here
        subprocess.run([str(script)], check=False)
    # The same store seen at /venvseal/store (root's default, or a user's one-time set-up)
    host = as_host_with_store_at_venvseal(tmp_path / "store", ["./result/bin/greet"],
                                          dict(os.environ), app)
    assert host.returncode == 0 and host.stdout == "Hello from greet!\n", host.stderr
    through = venvseal_process("run", app, "--store", tmp_path / "store", "--", "greet")
    assert through.code == 0 and through.out == "Hello from greet!\n", through.err


@pytest.mark.slow
def test_run_cwd_and_bind_reach_host_folders(workspace_app: Path, tmp_path: Path) -> None:
    app = workspace_app
    uv_lock(app, CACHE)
    assert venvseal("init", app, "--no-hash").code == 0
    no_imports(app)
    store = tmp_path / "store"
    assert venvseal("build", app, "--store", store, "--uv-cache", CACHE,
                    "--update-hash").code == 0
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("from the host\n")

    def run(*argv: str) -> tuple[int, str, str]:
        done = venvseal_process("run", app, "--store", store, "--uv-cache", CACHE, *argv)
        return done.code, done.out, done.err

    # --cwd: the app's own folder, writable (a SQLite file next to the app)
    code, out, err = run("--cwd", str(app), "--", "python", "-c",
                         "import os, sqlite3; sqlite3.connect('app.db').execute('create table "
                         "t(x)').connection.commit(); print(os.getcwd())")
    assert code == 0, err
    assert out == f"{app}\n" and (app / "app.db").stat().st_size > 0
    # --bind HOST:DEST:ro: readable, not writable
    code, out, err = run("--bind", f"{data}:/data:ro", "--", "python", "-c",
                         "print(open('/data/in.txt').read(), end='')")
    assert (code, out) == (0, "from the host\n"), err
    code, out, err = run("--bind", f"{data}:/data:ro", "--", "python", "-c",
                         "open('/data/out.txt', 'w')")
    assert code == 1 and "Read-only file system" in err and not (data / "out.txt").exists()
    # --bind HOST (same path inside), writable
    code, out, err = run("--bind", str(data), "--", "python", "-c",
                         f"open('{data}/out.txt', 'w').write('made inside')")
    assert code == 0, err
    assert (data / "out.txt").read_text() == "made inside"
