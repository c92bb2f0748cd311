"""[[fetch]]: real git repositories, a real HTTP server on 127.0.0.1, hashes from nix-hash."""

from __future__ import annotations

import base64
import io
import logging
import os
import shutil
import subprocess
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from venvseal.fetch.archive import unpack
from venvseal.fetch.errors import FetchError, UnsafeMemberError
from venvseal.fetch.realise import FetchResult, realise_fetch
from venvseal.hashes import Sha256, parse_sha256
from venvseal.netutil import redact_url as redact
from venvseal.recipe.model import Fetch
from venvseal.store.core import HashMismatchError, Store, UndeclaredHashError

WRONG = Sha256(bytes(32))
MISSING_REV = "0123456789abcdef0123456789abcdef01234567"


def nix_hash(path: Path) -> Sha256:
    out = subprocess.run(["nix-hash", "--type", "sha256", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return parse_sha256(out)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "store") as opened:
        yield opened


def realise(store: Store, fetch: Fetch, *, index: int = 0, key_prefix: str = "",
            network_env: dict[str, str] | None = None) -> FetchResult:
    return realise_fetch(fetch, store, recipe_file=Path("venvseal.toml"), key_prefix=key_prefix,
                         index=index, network_env=network_env or {})


def make_tree(root: Path, readme: str = "one") -> Path:
    """A small source tree: a file, an executable, a symlink, a subfolder."""
    (root / "sub").mkdir(parents=True)
    (root / "README").write_text(readme)
    (root / "sub" / "data.txt").write_text("data\n")
    (root / "run").write_text("#!/bin/sh\necho run\n")
    (root / "run").chmod(0o755)
    (root / "link").symlink_to("sub/data.txt")
    return root


def assert_no_new_path(store: Store) -> None:
    assert store.paths() == []


# git -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Repo:
    path: Path
    first: str  # the commit under test
    second: str
    expected: Path  # the first commit's tree, checked out by plain git, without .git


def git(cwd: Path, *args: str) -> str:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, env=env,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    path = make_tree(tmp_path / "repo")
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    first = git(path, "rev-parse", "HEAD")
    (path / "README").write_text("two")
    (path / "new.txt").write_text("added later")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "second")
    expected = tmp_path / "expected"
    git(tmp_path, "clone", "-q", str(path), str(expected))
    git(expected, "checkout", "-q", first)
    shutil.rmtree(expected / ".git")
    return Repo(path, first, git(path, "rev-parse", "HEAD"), expected)


def test_git_fetch_checks_out_the_commit_as_a_plain_tree(store: Store, repo: Repo) -> None:
    declared = nix_hash(repo.expected)
    result = realise(store, Fetch(name="lib", git=f"file://{repo.path}", rev=repo.first,
                                  hash=declared))
    assert result == FetchResult(name="lib", path=store.make_fixed_path("lib-src", declared),
                                 hash=declared, reused=False)
    assert (result.path / "README").read_text() == "one"
    assert not (result.path / "new.txt").exists()
    assert not (result.path / ".git").exists()
    assert os.readlink(result.path / "link") == "sub/data.txt"
    assert os.access(result.path / "run", os.X_OK)
    assert nix_hash(result.path) == declared
    assert store.is_valid(result.path)


def test_git_fetch_is_reused_without_the_network(store: Store, repo: Repo) -> None:
    fetch = Fetch(name="lib", git=f"file://{repo.path}", rev=repo.first,
                  hash=nix_hash(repo.expected))
    first = realise(store, fetch)
    shutil.rmtree(repo.path)  # unreachable now: only reuse can succeed
    again = realise(store, fetch)
    assert again.reused and again.path == first.path and again.hash == first.hash


def test_git_rev_that_does_not_exist(store: Store, repo: Repo) -> None:
    fetch = Fetch(name="lib", git=f"file://{repo.path}", rev=MISSING_REV,
                  hash=nix_hash(repo.expected))
    with pytest.raises(FetchError) as err:
        realise(store, fetch, index=2, key_prefix="tool.venvseal.")
    text = str(err.value)
    assert "venvseal.toml: tool.venvseal.fetch[2] (lib)" in text
    assert MISSING_REV in text and f"file://{repo.path}" in text
    assert "check tool.venvseal.fetch[2].rev" in text
    assert_no_new_path(store)


def test_git_rev_must_be_a_commit_id(store: Store, repo: Repo) -> None:
    fetch = Fetch(name="lib", git=f"file://{repo.path}", rev="--upload-pack=touch /tmp/x",
                  hash=WRONG)
    with pytest.raises(FetchError, match=r"fetch\[0\] \(lib\): rev .* is not a full commit id"):
        realise(store, fetch)


def test_git_repository_that_does_not_exist(store: Store, tmp_path: Path) -> None:
    fetch = Fetch(name="lib", git=f"file://{tmp_path}/nowhere.git", rev=MISSING_REV, hash=WRONG)
    with pytest.raises(FetchError, match=r"fetch\[0\] \(lib\): git cannot fetch file://.*"
                                         r"nowhere\.git.*check the git URL"):
        realise(store, fetch)
    assert_no_new_path(store)


def test_git_wrong_hash_is_a_mismatch_and_adds_nothing(store: Store, repo: Repo) -> None:
    fetch = Fetch(name="lib", git=f"file://{repo.path}", rev=repo.first, hash=WRONG)
    with pytest.raises(HashMismatchError) as err:
        realise(store, fetch)
    assert err.value.expected == WRONG and err.value.got == nix_hash(repo.expected)
    assert f"specified: {WRONG.sri}" in str(err.value)
    assert_no_new_path(store)


def test_git_undeclared_hash_tells_the_hash_to_declare(store: Store, repo: Repo) -> None:
    fetch = Fetch(name="lib", git=f"file://{repo.path}", rev=repo.first)
    with pytest.raises(UndeclaredHashError) as err:
        realise(store, fetch, index=1)
    expected = nix_hash(repo.expected)
    assert err.value.got == expected and err.value.exit_code == 1
    assert "fetch[1].hash is not declared" in str(err.value)
    assert f'hash = "{expected.sri}"' in str(err.value)
    assert "--update-hash" not in str(err.value)
    assert_no_new_path(store)


@pytest.mark.parametrize(("link", "target", "reason"), [
    ("leak", "/etc/shadow", "is a symlink to the absolute path '/etc/shadow'"),
    ("keys", "../../x", "is a symlink to '../../x', which leads outside the tree"),
    ("sub/up", "../..", "is a symlink to '../..', which leads outside the tree"),
    ("sub/hop", "../dir/../..", "is a symlink to '../dir/../..', which leads outside the tree"),
    ("here", "/tmp", "is a symlink to the absolute path '/tmp'"),
])
def test_git_checkout_with_a_link_out_of_the_tree_is_refused(
        store: Store, tmp_path: Path, link: str, target: str, reason: str) -> None:
    path = make_tree(tmp_path / "hostile")
    (path / "dir").mkdir()
    (path / "dir" / "f").write_text("f")
    (path / link).symlink_to(target)
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "hostile")
    rev = git(path, "rev-parse", "HEAD")
    fetch = Fetch(name="evil", git=f"file://{path}", rev=rev)  # no hash: refused before
    with pytest.raises(FetchError) as err:
        realise(store, fetch, index=3)
    text = str(err.value)
    assert text.startswith("venvseal.toml: fetch[3] (evil): the checkout of file://"), text
    assert f"is unsafe: member {link!r} {reason}" in text
    assert "make the link relative and inside the repository" in text
    assert_no_new_path(store)
    assert list((store.root / ".tmp").iterdir()) == []


def test_git_checkout_with_links_inside_the_tree_is_kept(store: Store, tmp_path: Path) -> None:
    path = make_tree(tmp_path / "fine")
    (path / "sub" / "back").symlink_to("../README")
    (path / "loop").symlink_to("loop")  # a loop is broken, not a way out
    (path / "dangling").symlink_to("sub/missing")
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "fine")
    fetch = Fetch(name="ok", git=f"file://{path}", rev=git(path, "rev-parse", "HEAD"))
    with pytest.raises(UndeclaredHashError):  # got as far as hashing: the links were accepted
        realise(store, fetch)


# HTTP ------------------------------------------------------------------------------------


@dataclass
class Server:
    """An HTTP server on 127.0.0.1 serving ``routes`` and, beyond them, files of ``docroot``."""

    docroot: Path
    routes: dict[str, bytes] = field(default_factory=dict)
    auth: list[str | None] = field(default_factory=list)  # each request's Authorization
    require: str | None = None  # the Authorization every request must carry, else 401
    port: int = 0

    def url(self, path: str, userinfo: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"http://{at}127.0.0.1:{self.port}{path}"


def handler_for(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.auth.append(self.headers.get("Authorization"))
            path = urlsplit(self.path).path
            if server.require and self.headers.get("Authorization") != server.require:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if path == "/short":  # promises 1000 bytes, sends 10 and hangs up
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"x" * 10)
                return
            body = server.routes.get(path)
            file = server.docroot / path.lstrip("/")
            if body is None and ".." not in path and file.is_file():
                body = file.read_bytes()
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    state = Server(docroot=tmp_path / "www")
    state.docroot.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def tar_gz(root: Path, arcname: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(root, arcname=arcname)
    return buffer.getvalue()


def test_tarball_is_unpacked_with_its_top_folder_stripped(store: Store, server: Server,
                                                          tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "pkg-1.0")
    server.routes["/pkg-1.0.tar.gz"] = tar_gz(tree, "pkg-1.0")
    declared = nix_hash(tree)
    result = realise(store, Fetch(name="pkg", url=server.url("/pkg-1.0.tar.gz"), hash=declared))
    assert sorted(os.listdir(result.path)) == ["README", "link", "run", "sub"]
    assert os.access(result.path / "run", os.X_OK)
    assert nix_hash(result.path) == declared and not result.reused


def test_zip_keeps_the_executable_bit(store: Store, server: Server, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, mode, data in (("top/run", 0o100755, b"#!/bin/sh\n"),
                                 ("top/doc.txt", 0o100644, b"doc")):
            info = zipfile.ZipInfo(name)
            info.create_system, info.external_attr = 3, mode << 16
            zipped.writestr(info, data)
    server.routes["/a.zip"] = buffer.getvalue()
    expected = tmp_path / "expected"
    expected.mkdir()
    (expected / "run").write_bytes(b"#!/bin/sh\n")
    (expected / "run").chmod(0o755)
    (expected / "doc.txt").write_bytes(b"doc")
    result = realise(store, Fetch(name="z", url=server.url("/a.zip"), hash=nix_hash(expected)))
    assert os.access(result.path / "run", os.X_OK) and not os.access(result.path / "doc.txt",
                                                                     os.X_OK)


def test_plain_file_is_put_in_a_folder_under_its_name(store: Store, server: Server,
                                                      tmp_path: Path) -> None:
    server.routes["/files/data%20set.json"] = b'{"a": 1}\n'
    expected = tmp_path / "expected"
    expected.mkdir()
    (expected / "data set.json").write_bytes(b'{"a": 1}\n')
    result = realise(store, Fetch(name="data", url=server.url("/files/data%20set.json"),
                                  hash=nix_hash(expected)))
    assert os.listdir(result.path) == ["data set.json"]
    assert nix_hash(result.path) == nix_hash(expected)


def test_file_url(store: Store, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src-2.0")
    (tmp_path / "src-2.0.tar.gz").write_bytes(tar_gz(tree, "src-2.0"))
    result = realise(store, Fetch(name="src", url=f"file://{tmp_path}/src-2.0.tar.gz",
                                  hash=nix_hash(tree)))
    assert (result.path / "README").read_text() == "one"


def test_proxies_come_from_network_env_only(store: Store, server: Server, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    server.routes["/f.txt"] = b"via proxy"
    expected = tmp_path / "expected"
    expected.mkdir()
    (expected / "f.txt").write_bytes(b"via proxy")
    # Only the proxy (our server) can answer for a host that no resolver knows.
    fetch = Fetch(name="f", url="http://venvseal-test.invalid/f.txt", hash=nix_hash(expected))
    result = realise(store, fetch, network_env={"http_proxy": server.url("")})
    assert (result.path / "f.txt").read_bytes() == b"via proxy"
    # The process environment is never read: its proxy would make this download work.
    monkeypatch.setenv("http_proxy", server.url(""))
    with pytest.raises(FetchError, match=r"cannot download http://127\.0\.0\.1:1/f\.txt"):
        realise(store, Fetch(name="g", url="http://127.0.0.1:1/f.txt", hash=WRONG))


def test_url_with_other_content_than_its_hash_is_a_mismatch(store: Store, server: Server,
                                                            tmp_path: Path) -> None:
    expected = tmp_path / "expected"
    expected.mkdir()
    (expected / "f.txt").write_text("what was pinned")
    server.routes["/f.txt"] = b"what the server sends today"
    with pytest.raises(HashMismatchError) as err:
        realise(store, Fetch(name="f", url=server.url("/f.txt"), hash=nix_hash(expected)))
    assert err.value.expected == nix_hash(expected) and err.value.got != err.value.expected
    assert_no_new_path(store)


def test_interrupted_download(store: Store, server: Server) -> None:
    with pytest.raises(FetchError, match=r"fetch\[0\] \(f\): the download of .*/short was "
                                         r"interrupted after 10 of 1000 bytes; retry"):
        realise(store, Fetch(name="f", url=server.url("/short"), hash=WRONG))
    assert_no_new_path(store)


@pytest.mark.parametrize(("path", "message"), [
    ("/missing.tar.gz", "answered HTTP 404"),
    ("/bad.tar.gz", "cannot unpack"),
])
def test_download_errors(store: Store, server: Server, path: str, message: str) -> None:
    server.routes["/bad.tar.gz"] = b"not gzip at all"
    with pytest.raises(FetchError, match=message):
        realise(store, Fetch(name="f", url=server.url(path), hash=WRONG))
    assert_no_new_path(store)


def test_unreachable_server(store: Store, server: Server) -> None:
    closed = Server(docroot=server.docroot, port=1)  # nothing listens on port 1
    with pytest.raises(FetchError, match=r"cannot download http://127\.0\.0\.1:1/x.*refused"):
        realise(store, Fetch(name="f", url=closed.url("/x"), hash=WRONG))


def test_tarball_escaping_its_folder_is_refused(store: Store, server: Server,
                                                tmp_path: Path) -> None:
    server.routes["/evil.tar"] = tar_of([file_member("top/ok"), file_member("../evil")])
    with pytest.raises(FetchError, match=r"unsafe: member '\.\./evil' has '\.\.'"):
        realise(store, Fetch(name="evil", url=server.url("/evil.tar"), hash=WRONG))
    assert_no_new_path(store)
    assert not any(p.name == "evil" for p in tmp_path.rglob("*"))


# Archives, member by member --------------------------------------------------------------

Member = tuple[tarfile.TarInfo, bytes | None]


def file_member(name: str, data: bytes = b"x") -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def dir_member(name: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info, None


def device_member(name: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info, None


def tar_of(members: list[Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


@pytest.mark.parametrize(("members", "member", "reason"), [
    ([file_member("../evil")], "../evil", "has '..'"),
    ([file_member("a/../../evil")], "a/../../evil", "has '..'"),
    ([file_member("/etc/evil")], "/etc/evil", "absolute path"),
    ([link_member("l", "../../outside")], "l", "symlink to '../../outside', outside"),
    ([link_member("l", "/etc/passwd")], "l", "symlink to '/etc/passwd', outside"),
    ([dir_member("d"), link_member("d/l", "../..")], "d/l", "outside"),
    ([device_member("null")], "null", "device"),
    ([dir_member("sub"), link_member("l", "sub"), file_member("l/x")], "l/x",
     "through the symlink 'l'"),
    ([link_member("h", "../x", tarfile.LNKTYPE)], "h", "has '..'"),
    ([link_member("h", "nothing", tarfile.LNKTYPE)], "h", "not a file unpacked before"),
    ([dir_member("d"), link_member("d/up", ".."), link_member("d/esc", "up/..")], "d/esc",
     "through other links"),
    ([dir_member("d"), file_member("d")], "d", "replace a folder"),
])
def test_unsafe_tar_members_are_refused(tmp_path: Path, members: list[Member], member: str,
                                        reason: str) -> None:
    archive = tmp_path / "a.tar"
    archive.write_bytes(tar_of(members))
    (tmp_path / "box").mkdir()
    with pytest.raises(UnsafeMemberError) as err:
        unpack(archive, tmp_path / "box" / "out")
    assert err.value.member == member and reason in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "box"]


def test_safe_links_and_hard_links_are_unpacked(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    archive.write_bytes(tar_of([
        dir_member("./"), file_member("./d/f", b"data"), link_member("d/up", ".."),
        link_member("d/same", "../d/f"), link_member("hard", "d/f", tarfile.LNKTYPE),
        file_member("dup", b"old"), file_member("dup", b"new"),
        link_member("loop1", "loop2"), link_member("loop2", "loop1"),
    ]))
    unpack(archive, tmp_path / "out")
    out = tmp_path / "out"
    assert (out / "d" / "same").read_text() == "data" and (out / "hard").read_text() == "data"
    assert not (out / "hard").is_symlink() and (out / "dup").read_text() == "new"
    assert os.readlink(out / "d" / "up") == ".."


@pytest.mark.parametrize(("name", "mode", "member"), [
    ("../evil", 0o100644, "../evil"),
    ("l", 0o120777, "l"),  # a symlink whose target is its content: /etc/passwd
])
def test_unsafe_zip_members_are_refused(tmp_path: Path, name: str, mode: int,
                                        member: str) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        info = zipfile.ZipInfo(name)
        info.create_system, info.external_attr = 3, mode << 16
        zipped.writestr(info, b"/etc/passwd")
    with pytest.raises(UnsafeMemberError) as err:
        unpack(archive, tmp_path / "out")
    assert err.value.member == member


# Secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "shown"), [
    ("https://user:pw@host/a.tar.gz?token=t1&v=2",
     "https://user:***@host/a.tar.gz?token=***&v=2"),
    ("https://ghp_abc@host/r.git", "https://***@host/r.git"),
    ("ssh://git@host/r.git", "ssh://git@host/r.git"),
    ("https://s3/b?X-Amz-Signature=s&X-Amz-Credential=c&x=1",
     "https://s3/b?X-Amz-Signature=***&X-Amz-Credential=***&x=1"),
    ("https://host/x?api_key=k#access_token=t", "https://host/x?api_key=***#access_token=***"),
    ("https://host/x.tar.gz", "https://host/x.tar.gz"),
    ("file:///srv/x.tar.gz", "file:///srv/x.tar.gz"),
])
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown


SECRETS = ("SECRET123", "SECRET456")


def assert_no_secret(text: str) -> None:
    assert not any(secret in text for secret in SECRETS), text


@pytest.mark.parametrize("path", ["/missing.tar.gz", "/short"])
def test_url_secrets_stay_out_of_errors_and_logs(store: Store, server: Server, path: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="venvseal")  # the CLI may have raised it
    url = server.url(f"{path}?token=SECRET123", userinfo="user:SECRET456")
    with pytest.raises(FetchError) as err:
        realise(store, Fetch(name="f", url=url, hash=WRONG))
    assert_no_secret(str(err.value))
    assert_no_secret(caplog.text)
    assert f"user:***@127.0.0.1:{server.port}{path}?token=***" in str(err.value)
    assert "downloading http://user:***@127.0.0.1" in caplog.text


def test_url_credentials_are_sent_but_never_stored(store: Store, server: Server,
                                                   tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="venvseal")  # the CLI may have raised it
    server.routes["/f.txt"] = b"private"
    expected = tmp_path / "expected"
    expected.mkdir()
    (expected / "f.txt").write_bytes(b"private")
    url = server.url("/f.txt?token=SECRET123", userinfo="user:SECRET456")
    result = realise(store, Fetch(name="f", url=url, hash=nix_hash(expected)))
    assert server.auth == ["Basic " + base64.b64encode(b"user:SECRET456").decode()]
    assert_no_secret(repr(result))
    assert_no_secret(caplog.text)
    assert "downloading http://user:***@127.0.0.1" in caplog.text
    for file in store.root.rglob("*"):
        if file.is_file() and not file.is_symlink():
            assert_no_secret(file.read_bytes().decode("utf-8", "replace"))


def test_git_secrets_stay_out_of_errors_and_logs(store: Store, server: Server,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="venvseal")  # the CLI may have raised it
    url = server.url("/nothing.git?token=SECRET123", userinfo="user:SECRET456")
    with pytest.raises(FetchError) as err:
        realise(store, Fetch(name="lib", git=url, rev=MISSING_REV, hash=WRONG))
    assert "git cannot fetch" in str(err.value)
    assert_no_secret(str(err.value))
    assert_no_secret(caplog.text)
    assert "$ " in caplog.text  # git's command lines were logged, without the URL


def test_git_uses_the_proxy_from_network_env(store: Store, server: Server,
                                             repo: Repo) -> None:
    bare = server.docroot / "lib.git"
    git(repo.path, "clone", "-q", "--bare", str(repo.path), str(bare))
    git(bare, "update-server-info")
    fetch = Fetch(name="lib", git="http://venvseal-test.invalid/lib.git", rev=repo.first,
                  hash=nix_hash(repo.expected))
    result = realise(store, fetch, network_env={"http_proxy": server.url("")})
    assert (result.path / "README").read_text() == "one"


def test_git_over_dumb_http_with_credentials(store: Store, server: Server, repo: Repo) -> None:
    bare = server.docroot / "lib.git"
    git(repo.path, "clone", "-q", "--bare", str(repo.path), str(bare))
    git(bare, "update-server-info")  # the dumb protocol: no shallow fetch, so a full one
    server.require = "Basic " + base64.b64encode(b"user:SECRET456").decode()
    result = realise(store, Fetch(name="lib", git=server.url("/lib.git", "user:SECRET456"),
                                  rev=repo.first, hash=nix_hash(repo.expected)))
    assert (result.path / "README").read_text() == "one"
    assert server.require in server.auth

