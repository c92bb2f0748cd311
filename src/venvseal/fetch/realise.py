"""Fixed-output fetches (``[[fetch]]``): a git commit or a URL, pinned by its NAR hash.

Like Nix's fetchgit and fetchzip, what is fetched is a plain tree: a git checkout without
``.git``, an unpacked archive with its single top-level folder stripped, or a folder holding
one downloaded file. Its NAR hash must equal the declared one before it enters the store, at
``make_fixed_path("<name>-src", hash)``; a valid path is reused without any network.

URLs may carry credentials (``user:password@``, ``?token=...``). They are shown only through
:func:`redact`, and every text that leaves this module (errors, log lines, git's output) is
scrubbed of them.
"""

from __future__ import annotations

import base64
import functools
import http.client
import logging
import lzma
import os
import posixpath
import re
import shutil
import ssl
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

from venvseal import process
from venvseal.errors import CommandError, LocatedError
from venvseal.hashes import Sha256
from venvseal.recipe.model import Fetch
from venvseal.store.core import Store, StorePath, UndeclaredHashError
from venvseal.store.fixed import FixedOutput, realise_fixed

log = logging.getLogger("venvseal.fetch")

CHUNK = 1 << 20
TIMEOUT = 60.0  # seconds a download may stall (per socket operation) before it is abandoned
# Query parameters whose values are credentials: access_token, api_key, X-Amz-Signature, ...
_SECRET_PARAM = re.compile(r"token|key|secret|passw|auth|sig|credential", re.IGNORECASE)
# Schemes where a lone user name is commonly a token (https://<token>@host/...); for ssh it
# is a login name such as "git" and stays visible.
_TOKEN_USER_SCHEMES = frozenset({"http", "https", "ftp"})
_REV = re.compile(r"[0-9a-f]{40}")
# Git gives up on a transfer slower than 1 kB/s for a minute instead of hanging forever.
_GIT_OPTIONS = ("-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=60",
                "-c", "init.defaultBranch=venvseal", "-c", "advice.detachedHead=false")


@dataclass(frozen=True, kw_only=True, slots=True)
class FetchResult:
    """A realised fetch: its store path, the tree's NAR hash and whether it was reused."""

    name: str
    path: StorePath
    hash: Sha256
    reused: bool
    fetched: tuple[StorePath, ...] = ()  # paths a substituter gave (this one, or none)


class FetchError(LocatedError):
    """A fetch failed: ``where`` names the recipe file, key path and fetch name."""


def realise_fetch(fetch: Fetch, store: Store, *, recipe_file: Path, key_prefix: str,
                  index: int, network_env: Mapping[str, str]) -> FetchResult:
    """Return the store path of ``fetch``'s tree, fetching it only if it is not there.

    ``network_env`` holds what the network step borrows from the host: proxy variables
    (``http_proxy``, ``https_proxy``, ``no_proxy``) and CA bundles (``SSL_CERT_FILE``,
    ``GIT_SSL_CAINFO``). Git submodules are not fetched: list each one as its own fetch.
    """
    key = f"{key_prefix}fetch[{index}]"
    where = f"{recipe_file}: {key} ({fetch.name})"

    def build(out: Path, work: Path) -> dict[str, str]:
        return _fetch_into(out, fetch, work=work, where=where, key=key,
                           network_env=network_env, base=recipe_file.parent)

    spec = FixedOutput(
        name=f"{fetch.name}-src", declared=fetch.hash, inputs={"stage": "fetch"},
        undeclared=lambda got: UndeclaredHashError(
            recipe_file, f"{key}.hash", got,
            hint=f"in the [[{key_prefix}fetch]] named {fetch.name!r}"))
    got = realise_fixed(store, spec, build)
    return FetchResult(name=fetch.name, path=got.path, hash=got.info.nar_hash,
                       reused=got.how != "built", fetched=got.fetched)


def _git_location(git: str, base: Path) -> str:
    """A git URL as given, or a local repository path made absolute against the recipe."""
    if "://" in git or git.startswith("/") or ":" in git.split("/", 1)[0]:
        return git  # a URL, an absolute path, or scp-like host:path
    return str((base / git).resolve())


def _fetch_into(out: Path, fetch: Fetch, *, work: Path, where: str, key: str,
                network_env: Mapping[str, str], base: Path) -> dict[str, str]:
    """Fetch into ``out``; what was fetched, with credentials redacted (for the store)."""
    if fetch.git is not None:
        if fetch.rev is None:
            raise FetchError(where, "git needs a rev", f"add {key}.rev, a full commit id")
        _fetch_git(_git_location(fetch.git, base), fetch.rev, out, work=work, where=where,
                   key=key, network_env=network_env)
        return {"git": redact(fetch.git), "rev": fetch.rev}
    if fetch.url is not None:
        _fetch_url(fetch.url, out, work=work, where=where, network_env=network_env)
        return {"url": redact(fetch.url)}
    raise FetchError(where, "neither git nor url is given", f"add {key}.git or {key}.url")


# Secrets ---------------------------------------------------------------------------------


def redact(url: str) -> str:
    """``url`` with its credentials shown as ``***``, for messages and logs.

    Redacted: the password of ``user:password@`` (a lone user name too for http, https and
    ftp, where it is often a token), and the values of query or fragment parameters whose
    name contains token, key, secret, passw, auth, sig or credential.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        if colon:
            netloc = f"{user}:***@{host}"
        elif parts.scheme.lower() in _TOKEN_USER_SCHEMES:
            netloc = f"***@{host}"
    shown = urlunsplit((parts.scheme, netloc, parts.path, _redact_params(parts.query),
                        _redact_params(parts.fragment)))
    return shown if _secrets(url) else url  # unchanged, not re-spelled, when nothing is secret


def _redact_params(text: str) -> str:
    params = []
    for param in text.split("&"):
        name, eq, value = param.partition("=")
        secret = eq and value and _SECRET_PARAM.search(unquote_plus(name))
        params.append(f"{name}=***" if secret else param)
    return "&".join(params)


def _secrets(url: str) -> list[str]:
    """Every credential in ``url``, as written and decoded, longest first."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found: set[str] = set()
    userinfo = parts.netloc.rpartition("@")[0]
    user, colon, password = userinfo.partition(":")
    if colon:
        found.add(password)
    elif user and parts.scheme.lower() in _TOKEN_USER_SCHEMES:
        found.add(user)
    for text in (parts.query, parts.fragment):
        for param in text.split("&"):
            name, _, value = param.partition("=")
            if value and _SECRET_PARAM.search(unquote_plus(name)):
                found.add(value)
    found |= {decoded for value in found for decoded in (unquote(value), unquote_plus(value))}
    return sorted((s for s in found if s), key=len, reverse=True)


def _scrubber(url: str) -> Callable[[str], str]:
    """A function removing ``url``'s credentials from any text (git's output, errors)."""
    secrets, shown = _secrets(url), redact(url)

    def scrub(text: str) -> str:
        text = text.replace(url, shown)
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    return scrub


# git -------------------------------------------------------------------------------------


def _fetch_git(url: str, rev: str, out: Path, *, work: Path, where: str, key: str,
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
    shown, scrub = redact(url), _scrubber(url)
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


# URLs ------------------------------------------------------------------------------------


def _fetch_url(url: str, out: Path, *, work: Path, where: str,
               network_env: Mapping[str, str]) -> None:
    """Download ``url``; unpack an archive into ``out``, else put the file in ``out``."""
    path = urlsplit(url).path
    suffix = next((s for s in ARCHIVE_SUFFIXES if path.lower().endswith(s)), None)
    if suffix is None:
        out.mkdir()
        _download(url, out / _file_name(path), where=where, network_env=network_env)
        return
    archive = work / f"archive{suffix}"
    _download(url, archive, where=where, network_env=network_env)
    unpacked = work / "unpacked"
    try:
        unpack(archive, unpacked)
    except UnsafeMemberError as err:
        raise FetchError(where, f"the archive from {redact(url)} is unsafe: {err}",
                         "venvseal does not unpack it; check the URL") from err
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError,
            OSError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise  # the file system's fault (disk full, ...), not the archive's
        raise FetchError(where, f"cannot unpack {redact(url)}: {err}",
                         f"check that the URL gives a valid {suffix} archive") from err
    # fetchzip's stripRoot: an archive of one top-level folder yields that folder's content.
    entries = os.listdir(unpacked)
    top = unpacked / entries[0] if len(entries) == 1 else None
    if top is not None and top.is_dir() and not top.is_symlink():
        os.rename(top, out)
    else:
        os.rename(unpacked, out)


def _file_name(url_path: str) -> str:
    """The URL's last path segment, decoded; ``download`` if that is not a file name."""
    name = posixpath.basename(unquote(url_path))
    return name if name not in ("", ".", "..") and "\0" not in name else "download"


def _download(url: str, dest: Path, *, where: str, network_env: Mapping[str, str]) -> None:
    """Stream ``url`` to ``dest``; FetchError if it fails or arrives incomplete.

    Exceptions are not chained: their text may hold the raw URL. Their scrubbed text is in
    the message instead.
    """
    shown, scrub = redact(url), _scrubber(url)
    log.debug("downloading %s", shown)
    try:
        request = _request(url)
        response = _opener(request.host, network_env).open(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as err:
        err.close()
        raise FetchError(where, f"{shown} answered HTTP {err.code} {scrub(str(err.reason))}",
                         "check the URL and its credentials") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        raise FetchError(where, f"cannot download {shown}: {scrub(str(reason))}",
                         "check the URL and the network (proxy settings)") from None
    with response, dest.open("wb") as file:
        length = response.headers.get("Content-Length")
        received = 0
        while True:
            try:
                chunk = response.read(CHUNK)
            except (http.client.HTTPException, OSError) as err:  # reset, timeout, bad chunk
                detail = scrub(str(err)) or type(err).__name__
                raise _interrupted(where, shown, f"after {received} bytes: {detail}") from None
            if not chunk:
                break
            file.write(chunk)
            received += len(chunk)
    # http.client returns a short body without complaint when the server hangs up early.
    if length is not None and length.isdigit() and received != int(length):
        raise _interrupted(where, shown, f"after {received} of {length} bytes")


def _interrupted(where: str, shown: str, detail: str) -> FetchError:
    return FetchError(where, f"the download of {shown} was interrupted {detail}",
                      "retry; if it keeps failing, check the network")


def _request(url: str) -> urllib.request.Request:
    """A request for ``url`` with ``user:password@`` turned into HTTP basic authentication."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return urllib.request.Request(url)
    userinfo, _, host = parts.netloc.rpartition("@")
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=host)))
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    # Unredirected: a redirect to another host must not carry the credentials along.
    request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


def _opener(host: str, network_env: Mapping[str, str]) -> urllib.request.OpenerDirector:
    """An opener using only ``network_env``'s proxies and CA bundle, never os.environ."""
    proxies = {}
    if not _bypass_proxy(host, _env(network_env, "no_proxy")):
        for scheme in ("http", "https"):
            if value := _env(network_env, f"{scheme}_proxy"):
                proxies[scheme] = value
    context = ssl.create_default_context(cafile=network_env.get("SSL_CERT_FILE"))
    return urllib.request.build_opener(urllib.request.ProxyHandler(proxies),
                                       urllib.request.HTTPSHandler(context=context))


def _env(env: Mapping[str, str], name: str) -> str:
    return env.get(name) or env.get(name.upper()) or ""


def _bypass_proxy(host: str, no_proxy: str) -> bool:
    """True if ``host`` (with an optional port) matches ``no_proxy``, as curl reads it."""
    hostname = host.rpartition(":")[0] if host.count(":") == 1 else host
    for entry in (e.strip().lstrip(".").lower() for e in no_proxy.split(",")):
        if entry == "*" or (entry and (hostname == entry or hostname.endswith("." + entry))):
            return True
    return False


# Archives --------------------------------------------------------------------------------

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar", ".zip")
MemberKind = Literal["file", "dir", "symlink", "hardlink", "special"]
_ZIP_UNIX = 3  # ZipInfo.create_system of archives made on Unix: external_attr holds st_mode


class UnsafeMemberError(Exception):
    """An archive member that could write or point outside the output; never unpacked."""

    def __init__(self, member: str, reason: str) -> None:
        self.member = member
        self.reason = reason
        super().__init__(f"member {member!r} {reason}")


@dataclass(frozen=True, slots=True)
class _Member:
    """One archive entry, read the same way from tar and zip."""

    name: str
    kind: MemberKind
    executable: bool = False
    link: str = ""  # a symlink's target, or the member a hard link repeats
    open: Callable[[], IO[bytes]] | None = None


def unpack(archive: Path, dest: Path) -> None:
    """Unpack a tar (any compression) or zip ``archive`` into the new folder ``dest``.

    Does not rely on tarfile's extraction filters (3.11.4+, and never for zip): refuses
    absolute names, ``..``, links pointing outside ``dest``, writing through a link, and
    devices or fifos (:class:`UnsafeMemberError`). Only the executable bit of a mode is kept;
    owners and times are not restored (a NAR has neither).
    """
    dest.mkdir()
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zipped:
            _extract(_zip_members(zipped), dest)
    else:
        with tarfile.open(archive, "r:*") as tar:
            _extract(_tar_members(tar), dest)
    _check_links_resolve_inside(dest)


def _tar_members(tar: tarfile.TarFile) -> Iterator[_Member]:
    for info in tar:
        if info.isreg():
            yield _Member(info.name, "file", bool(info.mode & 0o111), open=_tar_reader(tar, info))
        elif info.isdir():
            yield _Member(info.name, "dir")
        elif info.issym():
            yield _Member(info.name, "symlink", link=info.linkname)
        elif info.islnk():
            yield _Member(info.name, "hardlink", link=info.linkname)
        else:
            yield _Member(info.name, "special")


def _tar_reader(tar: tarfile.TarFile, info: tarfile.TarInfo) -> Callable[[], IO[bytes]]:
    def read() -> IO[bytes]:
        data = tar.extractfile(info)
        if data is None:
            raise tarfile.ReadError(f"no data for member {info.name!r}")
        return data

    return read


def _zip_members(zipped: zipfile.ZipFile) -> Iterator[_Member]:
    for info in zipped.infolist():
        mode = info.external_attr >> 16 if info.create_system == _ZIP_UNIX else 0
        if info.is_dir() or stat.S_ISDIR(mode):
            yield _Member(info.filename, "dir")
        elif stat.S_ISLNK(mode):
            link = zipped.read(info).decode("utf-8", "surrogateescape")
            yield _Member(info.filename, "symlink", link=link)
        elif mode and not stat.S_ISREG(mode):  # a mode of 0 carries no type: a plain file
            yield _Member(info.filename, "special")
        else:
            yield _Member(info.filename, "file", bool(mode & 0o111),
                          open=functools.partial(zipped.open, info))


def _extract(members: Iterable[_Member], dest: Path) -> None:
    """Write ``members`` under ``dest``; a later entry replaces an earlier file or link."""
    for member in members:
        parts = _member_parts(member.name, member.name)
        if not parts:
            continue  # the archive's own root, "./"
        if member.kind == "special":
            raise UnsafeMemberError(member.name, "is a device, fifo or other special file")
        target = _parent(dest, parts, member) / parts[-1]
        if os.path.lexists(target):
            if not target.is_symlink() and target.is_dir():
                if member.kind == "dir":
                    continue
                raise UnsafeMemberError(member.name, "would replace a folder unpacked before")
            target.unlink()
        if member.kind == "dir":
            target.mkdir()
        elif member.kind == "symlink":
            _check_link(parts, member)
            os.symlink(member.link, target)
        elif member.kind == "hardlink":
            source = _hardlink_source(dest, member)
            shutil.copyfile(source, target)
            os.chmod(target, 0o755 if source.stat().st_mode & 0o111 else 0o644)
        else:
            _write_file(member, target)


def _member_parts(name: str, member: str) -> list[str]:
    """``name``'s path components; UnsafeMemberError if it is absolute or has ``..``."""
    if name.startswith("/"):
        raise UnsafeMemberError(member, f"has the absolute path {name!r}")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeMemberError(member, f"has '..' in {name!r}, which leads outside the output")
    return parts


def _parent(dest: Path, parts: list[str], member: _Member) -> Path:
    """The folder ``member`` goes in, created as needed; never reached through a link."""
    path = dest
    for part in parts[:-1]:
        path = path / part
        if not os.path.lexists(path):
            path.mkdir()
        elif path.is_symlink() or not path.is_dir():
            what = "symlink" if path.is_symlink() else "file"
            raise UnsafeMemberError(member.name, f"would be written through the {what} "
                                    f"{path.relative_to(dest).as_posix()!r}")
    return path


def _check_link(parts: list[str], member: _Member) -> None:
    """Refuse a symlink whose target is absolute or climbs out of the output."""
    if not member.link or member.link.startswith("/"):
        raise UnsafeMemberError(member.name, f"is a symlink to {member.link!r}, outside the "
                                "output")
    resolved = posixpath.normpath(posixpath.join(*parts[:-1], member.link))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeMemberError(member.name, f"is a symlink to {member.link!r}, outside the "
                                "output")


def _hardlink_source(dest: Path, member: _Member) -> Path:
    """The file unpacked earlier that hard link ``member`` repeats (copied, not linked)."""
    path = dest
    for part in _member_parts(member.link, member.name):
        path = path / part
        if path.is_symlink():
            break
    if path.is_symlink() or not path.is_file():
        raise UnsafeMemberError(member.name, f"is a hard link to {member.link!r}, which is "
                                "not a file unpacked before it")
    return path


def _write_file(member: _Member, target: Path) -> None:
    if member.open is None:
        raise tarfile.ReadError(f"no data for member {member.name!r}")
    with member.open() as source, target.open("xb") as sink:
        shutil.copyfileobj(source, sink, CHUNK)
    os.chmod(target, 0o755 if member.executable else 0o644)


def _check_links_resolve_inside(dest: Path) -> None:
    """Refuse links that leave ``dest`` through other links (``a -> b/..``, ``b -> ..``).

    Each link was checked on its own as written; only the finished tree shows chains.
    """
    root = Path(os.path.realpath(dest))
    for folder, dirs, files in os.walk(dest):
        for name in sorted(dirs + files):
            path = Path(folder, name)
            # realpath, not Path.resolve: a link loop is harmless here, not an error.
            if path.is_symlink() and not Path(os.path.realpath(path)).is_relative_to(root):
                member = path.relative_to(dest).as_posix()
                raise UnsafeMemberError(member, f"is a symlink to {os.readlink(path)!r}, "
                                        "which leads outside the output through other links")
