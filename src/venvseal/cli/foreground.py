"""Run a sandboxed command in the foreground: signals reach the app, not the sandbox.

bubblewrap's ``--new-session`` puts the app in a session of its own (so it cannot push input
into this terminal), hence Ctrl-C on the terminal reaches venvseal, never the app; and
bubblewrap itself dies at once on SIGINT, taking the app with it (``--die-with-parent``). So
bubblewrap starts in a process group of its own, tells us (``--info-fd``) the host pid of
the sandbox's first process, whose process group the app shares, and venvseal forwards
SIGINT, SIGTERM and SIGHUP to that group: the app shuts down as it would outside, with its
own handlers. (The sandbox's pid 1 ignores them unless it handles them: pid namespace rule.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("venvseal")

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _read_child_pid(fd: int) -> int | None:
    """The sandbox's first process from bubblewrap's info JSON (None if it failed first)."""
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    try:
        pid = json.loads(data)["child-pid"]
    except (ValueError, KeyError, TypeError):
        return None
    return pid if isinstance(pid, int) else None


def call(argv: Sequence[str], *, pass_fds: Sequence[int] = ()) -> int:
    """Run the bubblewrap command line ``argv``, forwarding signals; the app's exit status
    (128 + N when signal N ended it, as shells report it). ``pass_fds`` stay open in it."""
    read_end, write_end = os.pipe()
    command = [argv[0], "--info-fd", str(write_end), *argv[1:]]
    log.debug("$ %s", " ".join(command))
    child: list[int] = []  # set once bubblewrap reports it
    pending: list[int] = []  # signals that arrived before

    def forward(signum: int, _frame: FrameType | None) -> None:
        if not child:
            pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(child[0], signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        with subprocess.Popen(command, pass_fds=(write_end, *pass_fds), process_group=0) as proc:
            os.close(write_end)
            pid = _read_child_pid(read_end)
            os.close(read_end)
            if pid is not None:
                child.append(pid)
                for signum in pending:
                    forward(signum, None)
            elif pending:
                proc.send_signal(pending[0])
            code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code
