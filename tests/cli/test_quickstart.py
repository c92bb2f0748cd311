"""The README's quickstart, typed into a terminal (tmux): init, build, run serving HTTP,
Ctrl-C shutting the app down gracefully, image; on a fresh ``uv init --package`` app."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import PYTHON, free_port

REPO = Path(__file__).resolve().parents[2]
# Until the assembly installs a project's own package (the root of a `uv init --package`
# app), the closure gets it by a copy, and runs it through its Python.
ROOT_PROJECT_COPY = """
[[assemble.copy]]
from = "src/hello"
to = "@site-packages@/hello"
"""


class Terminal:
    """A tmux session of our own (its own server, its socket in the test's folder), driven
    by keys and read back."""

    def __init__(self, socket: Path, cwd: Path, env: dict[str, str]) -> None:
        self.socket = socket
        # Through env(1): tmux applies the session's PATH only after finding the shell.
        shell = shlex.join(["env", *(f"{k}={v}" for k, v in env.items()), "bash", "--norc",
                            "--noprofile"])
        self._tmux("new-session", "-d", "-s", "qs", "-x", "250", "-y", "50", "-c", str(cwd),
                   shell)
        self._tmux("set-option", "-g", "history-limit", "50000")
        self.marks = 0

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", str(self.socket), *args], check=True,
                              capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "qs")

    def type(self, line: str) -> None:
        self._tmux("send-keys", "-t", "qs", "-l", line)
        self._tmux("send-keys", "-t", "qs", "Enter")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "qs", *keys)

    def wait_for(self, pattern: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if re.search(pattern, screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} did not appear; the terminal shows:\n{self.screen()}")

    def command(self, line: str, timeout: float = 600) -> tuple[int, str]:
        """Type ``line``, wait for it to end; its exit status and what it printed."""
        self.marks += 1
        mark = f"END-{self.marks}"
        before = len(self.screen())
        self.type(f"{line}; echo {mark}=$?")
        screen = self.wait_for(rf"(?m)^{mark}=\d+$", timeout)
        code = int(re.search(rf"(?m)^{mark}=(\d+)$", screen).group(1))  # type: ignore[union-attr]
        return code, screen[max(0, before - 200):]

    def close(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], check=False,
                       capture_output=True)
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def terminal(hello_app: Path, tmp_path: Path) -> Iterator[Terminal]:
    cache = Path(os.environ.get("VENVSEAL_TEST_CACHE", "/var/cache/venvseal-tests"))
    env = {"PATH": f"{REPO / '.venv' / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path),
           "TERM": "xterm-256color", "VENVSEAL_STORE": str(tmp_path / "store"),
           "VENVSEAL_UV_CACHE": str(cache / "uv"), "UV_CACHE_DIR": str(cache / "uv"),
           "UV_PYTHON_DOWNLOADS": "never", "PS1": "$ "}
    term = Terminal(tmp_path / "tmux.sock", hello_app, env)
    try:
        yield term
    finally:
        term.close()


@pytest.mark.slow
def test_quickstart_in_a_terminal(terminal: Terminal, hello_app: Path) -> None:
    code, out = terminal.command(f"uv lock --python {PYTHON}")
    assert code == 0, out
    code, out = terminal.command("venvseal init")
    assert code == 0, out
    assert "toolchain: the host's /usr/bin/python3.11" in out and "meets requires-python" in out
    assert "image entrypoint: @out@/bin/hello" in out and "verify imports: hello" in out
    assert re.search(r'updated .*venvseal\.toml: deps\.hash = "sha256-', out), out

    code, out = terminal.command("venvseal build --out-link result")
    python_entry = code != 0 and "No module named 'hello'" in out
    if python_entry:  # see ROOT_PROJECT_COPY
        with (hello_app / "venvseal.toml").open("a") as f:
            f.write(ROOT_PROJECT_COPY)
        code, out = terminal.command("venvseal build --out-link result")
    assert code == 0, out
    assert "deps: reused" in out and "closure: built" in out
    assert "run it with: venvseal run -- <command>" in out

    code, out = terminal.command("venvseal run -- python -V")
    assert code == 0 and "Python 3.11" in out, out

    port = free_port()
    app = "python -c 'import hello; hello.main()'" if python_entry else "hello"
    terminal.type(f"venvseal run --env PORT={port} -- {app}; echo RUN-END=$?")
    terminal.wait_for(f"hello: serving on 127.0.0.1:{port}", timeout=120)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        assert response.read() == b"hello from the closure\n"
    terminal.keys("C-c")
    screen = terminal.wait_for(r"(?m)^RUN-END=\d+$", timeout=60)
    assert "hello: got signal 2, shutting down gracefully" in screen
    assert "hello: stopped" in screen and "RUN-END=0" in screen, screen

    terminal.type("venvseal shell")
    terminal.wait_for(r"a shell in \S+-hello-0\.1\.0", timeout=120)
    terminal.type("python -c 'import sys; print(\"in\", sys.prefix)'; exit 3")
    terminal.wait_for(r"(?m)^in /venvseal/store/\S+-hello-0\.1\.0$", timeout=60)
    terminal.wait_for(r"(?m)^exit$", timeout=60)
    code, out = terminal.command("echo shell-status=$?")
    assert "shell-status=3" in out, out

    code, out = terminal.command("venvseal closure | head -n 2")
    assert code == 0 and "internal error" not in out and "BrokenPipe" not in out, out

    code, out = terminal.command("venvseal image -o app.tar")
    assert code == 0, out
    assert re.search(r"(?m)^sha256:[0-9a-f]{64}$", out), out
    with tarfile.open(hello_app / "app.tar") as archive:
        assert "index.json" in archive.getnames()
