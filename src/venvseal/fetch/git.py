"""Fetching one commit of a git repository as a plain tree (no ``.git``, no submodules).

Git runs with a cleared environment and no user or system config; the URL, which may hold a
token, goes in the repository's own config, never on a command line, and every text git
prints is scrubbed of its credentials. The checkout is refused if a symlink in it is
absolute or leads out of it (:func:`venvseal.fetch.archive.check_links_inside`): a source
tree must not pull host files such as ``/etc/shadow`` into a closure or an image.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from venvseal import process
from venvseal.errors import CommandError
from venvseal.fetch.archive import check_links_inside
from venvseal.fetch.errors import FetchError, UnsafeMemberError
from venvseal.netutil import redact_url, scrubber

log = logging.getLogger("venvseal.fetch")

_REV = re.compile(r"[0-9a-f]{40}")
# Git gives up on a transfer slower than 1 kB/s for a minute instead of hanging forever.
_GIT_OPTIONS = ("-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=60",
                "-c", "init.defaultBranch=venvseal", "-c", "advice.detachedHead=false")


def fetch_git(url: str, rev: str, out: Path, *, work: Path, where: str, key: str,
              network_env: Mapping[str, str]) -> None:
    """Check out commit ``rev`` of ``url`` into ``out`` and remove ``.git`` (no submodules).

    Git runs with a cleared environment: no user or system config, credential helper, ssh
    key or prompt changes what is fetched. Credentials go in the URL; ssh needs an agent
    whose SSH_AUTH_SOCK the caller puts in ``network_env``.
    """
    if not _REV.fullmatch(rev):  # also keeps an option such as --upload-pack=... off argv
        raise FetchError(where, f"rev {rev!r} is not a full commit id",
                         f"set {key}.rev to the 40-hex id of the commit")
    git = process.find_tool("git", "git")
    shown, scrub = redact_url(url), scrubber(url)
    home = work / "home"
    home.mkdir()
    env = {**network_env, "HOME": str(home), "GIT_TERMINAL_PROMPT": "0",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "LC_ALL": "C"}
    if "SSL_CERT_FILE" in network_env:
        env.setdefault("GIT_SSL_CAINFO", network_env["SSL_CERT_FILE"])

    def run(*args: str, check: bool = True) -> process.Completed:
        return process.run([git, *_GIT_OPTIONS, "-C", str(out), *args], env=env, scrub=scrub,
                           what=f"git {args[0]} for {where}", check=check)

    out.mkdir()
    run("init", "--quiet", "--template=")
    _add_remote(out / ".git" / "config", url, where)
    log.debug("fetching %s at %s", shown, rev)
    # One shallow fetch of the commit is enough where the server allows it (GitHub, GitLab,
    # any protocol v2 server); otherwise fetch every branch and tag, as a clone would.
    shallow = run("fetch", "--quiet", "--depth=1", "origin", rev, check=False)
    if shallow.returncode != 0 or not _has_commit(run, rev):
        try:
            run("fetch", "--quiet", "--tags", "origin")
        except CommandError as err:
            raise FetchError(where, f"git cannot fetch {shown} ({_git_reason(err)})",
                             "check the git URL and that the repository is reachable from "
                             "here (proxy settings, credentials)") from err
        if not _has_commit(run, rev):
            raise FetchError(where, f"commit {rev} is not in {shown}",
                             f"check {key}.rev: it must be the full 40-hex id of a commit on "
                             "a branch or tag of that repository")
    run("checkout", "--quiet", "--detach", rev)
    shutil.rmtree(out / ".git")
    try:
        check_links_inside(out)
    except UnsafeMemberError as err:
        raise FetchError(where, f"the checkout of {shown} at {rev} is unsafe: {err}",
                         "venvseal does not use it: a fetched tree must not point at host "
                         "files; make the link relative and inside the repository") from err


def _git_reason(err: CommandError) -> str:
    """Git's own explanation on one line: its fatal and error lines (all of -v shows more)."""
    lines = [line.strip() for line in err.output_tail.splitlines() if line.strip()]
    reasons = [line for line in lines if line.startswith(("fatal:", "error:"))] or lines[-1:]
    return "; ".join(reasons) or f"exit {err.returncode}"


def _has_commit(run: Callable[..., process.Completed], rev: str) -> bool:
    return run("cat-file", "-e", f"{rev}^{{commit}}", check=False).returncode == 0


def _add_remote(config: Path, url: str, where: str) -> None:
    """Name ``url`` as the remote in the repository's own config file.

    Not on a command line: argv is visible to every user (ps) and the URL may hold a token.
    """
    if any(ch in url for ch in "\n\r\0"):
        raise FetchError(where, "the git URL contains a line break or NUL", "fix the URL")
    quoted = url.replace("\\", "\\\\").replace('"', '\\"')  # git-config(1) string syntax
    with config.open("a", encoding="utf-8") as file:
        file.write(f'[remote "origin"]\n\turl = "{quoted}"\n'
                   '\tfetch = +refs/heads/*:refs/remotes/origin/*\n')
