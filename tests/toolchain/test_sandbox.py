"""The bubblewrap sandbox: the command line it builds (pure), and what a real command can see.

The real tests run /usr/bin/bwrap with the host's own root as the toolchain root, as a
recipe with ``root = "/"`` does.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest

import venvseal
from venvseal.process import Completed
from venvseal.toolchain.resolve import uv_binary
from venvseal.toolchain.sandbox import (
    BUILD_ROOT,
    GROUP,
    OUT_DIR,
    PASSWD,
    SANDBOX_UID,
    SRC_DIR,
    Identity,
    MissingProgramError,
    Mount,
    Sandbox,
    SandboxSpec,
    bwrap_argv,
    fixed_env,
)

PYTHON = "/usr/bin/python3.11"
CONNECT = ("import socket, sys\n"
           "socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10).close()\n")


# The pure command line ---------------------------------------------------------------------


def fake_root(tmp_path: Path) -> Path:
    """A toolchain root with usrmerge symlinks and the folders a host root also has."""
    root = tmp_path / "root-fs"
    for name in ("usr/bin", "usr/lib", "etc", "opt", "home/someone", "root", "var/lib",
                 "srv", "mnt"):
        (root / name).mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    (root / "lib").symlink_to("usr/lib")
    for name in (*SECRETS, "ld.so.cache", "nsswitch.conf", "hosts", "passwd", "group",
                 "ssl/certs/ca-certificates.crt", "ssl/openssl.cnf", "python3.11/sitecustomize.py"):
        (root / "etc" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "etc" / name).write_text("x\n")
    (root / "etc" / "alternatives").mkdir()
    (root / "etc" / "alternatives" / "cc").symlink_to("/usr/bin/gcc-12")
    return root


def argv_of(bwrap: str, spec: SandboxSpec, argv: Sequence[str]) -> list[str]:
    return bwrap_argv(bwrap, spec, argv, identity=IDENTITY)


IDENTITY = Identity(passwd=7, group=8)
# Files of a host's /etc that no build step may see.
SECRETS = ("shadow", "gshadow", "shadow-", "sudoers", "sudoers.d/admins",
           "ssh/ssh_host_ed25519_key", "ssl/private/host.key", "gitconfig", "pip.conf")


def triples(argv: Sequence[str], flag: str) -> list[tuple[str, str]]:
    """The (a, b) of every ``flag a b`` in ``argv``."""
    return [(argv[i + 1], argv[i + 2]) for i, arg in enumerate(argv) if arg == flag]


def setenvs(argv: Sequence[str]) -> list[tuple[str, str]]:
    return triples(argv, "--setenv")


def test_root_entries_are_bound_read_only(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    argv = argv_of("bwrap", SandboxSpec(root=root), ["true"])
    assert argv[:3] == ["bwrap", "--tmpfs", "/"]
    ro = triples(argv, "--ro-bind")
    for name in ("usr", "opt"):
        assert (str(root / name), f"/{name}") in ro
    assert (str(root / "etc"), "/etc") not in ro  # curated instead
    assert ("usr/bin", "/bin") in triples(argv, "--symlink")
    assert ("usr/lib", "/lib") in triples(argv, "--symlink")
    assert triples(argv, "--bind") == []  # nothing of the root is writable


@pytest.mark.parametrize("name", ["home", "root", "var", "srv", "mnt"])
def test_folders_outside_the_allowed_list_never_appear(tmp_path: Path, name: str) -> None:
    root = fake_root(tmp_path)
    argv = argv_of("bwrap", SandboxSpec(root=root, network=True), ["true"])
    hidden = str(root / name)
    assert not [a for a in argv if a == hidden or a.startswith(hidden + "/")]
    assert f"/{name}" not in argv


def test_host_root_never_exposes_home_folders() -> None:
    argv = argv_of("/usr/bin/bwrap", SandboxSpec(root=Path("/"), network=True), ["true"])
    assert ("/usr", "/usr") in triples(argv, "--ro-bind")
    for hidden in ("/home", "/root"):
        assert not [a for a in argv if a == hidden or a.startswith(hidden + "/")]


@pytest.mark.parametrize("network", [False, True])
def test_network_only_when_asked(tmp_path: Path, network: bool) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\n")
    spec = SandboxSpec(root=fake_root(tmp_path), network=network, resolv_conf=resolv)
    argv = argv_of("bwrap", spec, ["true"])
    assert "--unshare-all" in argv
    assert ("--share-net" in argv) is network
    assert ((str(resolv), "/etc/resolv.conf") in triples(argv, "--ro-bind")) is network
    if network:  # shared only after everything was unshared
        assert argv.index("--share-net") > argv.index("--unshare-all")


@pytest.mark.parametrize("network", [False, True])
def test_etc_is_curated_and_never_holds_secrets(tmp_path: Path, network: bool) -> None:
    root = fake_root(tmp_path)
    argv = argv_of("bwrap", SandboxSpec(root=root, network=network), ["true"])
    etc = str(root / "etc")
    shown = {target: host for host, target in triples(argv, "--ro-bind")
             if host.startswith(etc + "/")}
    expected = {"/etc/ld.so.cache", "/etc/nsswitch.conf", "/etc/hosts", "/etc/ssl/openssl.cnf",
                "/etc/python3.11", "/etc/alternatives"}
    if network:
        expected.add("/etc/ssl/certs")
    assert set(shown) == expected
    # passwd and group name only the sandbox user: they come from identity_fds, not /etc.
    assert triples(argv, "--ro-bind-data") == [("7", "/etc/passwd"), ("8", "/etc/group")]
    assert ("/usr/bin/gcc-12", "/etc/alternatives/cc") not in triples(argv, "--symlink")
    assert (str(root / "etc/alternatives"), "/etc/alternatives") in triples(argv, "--ro-bind")
    for secret in SECRETS:
        assert not [a for a in argv if secret in a], secret


def test_a_linked_etc_is_never_followed(tmp_path: Path) -> None:
    root = tmp_path / "root-fs"
    (root / "usr").mkdir(parents=True)
    (root / "etc").symlink_to("/etc")  # would lead off the root, to the host's /etc
    argv = argv_of("bwrap", SandboxSpec(root=root, network=True), ["true"])
    assert not [a for a in argv if a.startswith(str(root / "etc"))]
    assert ("/etc", "/etc") not in triples(argv, "--symlink")
    assert ("7", "/etc/passwd") in triples(argv, "--ro-bind-data")


def test_steps_run_as_the_sandbox_user_in_their_own_user_namespace(tmp_path: Path) -> None:
    argv = argv_of("bwrap", SandboxSpec(root=fake_root(tmp_path)), ["true"])
    assert "--unshare-user" in argv and "--disable-userns" in argv
    assert argv[argv.index("--uid") + 1] == str(SANDBOX_UID) != "0"
    assert argv[argv.index("--gid") + 1] == str(SANDBOX_UID)
    assert "--cap-add" not in argv
    assert PASSWD.split(":")[2] == str(SANDBOX_UID)
    assert GROUP.count("\n") == 1 and PASSWD.count("\n") == 1


def test_clearenv_precedes_exactly_the_given_environment(tmp_path: Path) -> None:
    env = {**fixed_env([PurePosixPath("/usr/bin")]), "CFLAGS": "-O2 -g0", "EMPTY": ""}
    argv = argv_of("bwrap", SandboxSpec(root=fake_root(tmp_path), env=env), ["true"])
    clear = argv.index("--clearenv")
    first_setenv = argv.index("--setenv")
    assert clear < first_setenv
    assert argv.count("--clearenv") == 1
    pairs = setenvs(argv)
    assert dict(pairs) == env
    assert len(pairs) == len(env)
    assert pairs == sorted(pairs)  # same spec, same command line


def test_mounts_writable_or_not_after_the_root(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    spec = SandboxSpec(root=fake_root(tmp_path), mounts=(
        Mount(host=src, target=SRC_DIR),
        Mount(host=out, target=OUT_DIR, writable=True),
    ))
    argv = argv_of("bwrap", spec, ["true"])
    assert (str(src), str(SRC_DIR)) in triples(argv, "--ro-bind")
    assert (str(src), str(SRC_DIR)) not in triples(argv, "--bind")
    assert triples(argv, "--bind") == [(str(out), str(OUT_DIR))]
    # Mounts go on top of the empty root and the build folder, so they must come after them.
    assert argv.index(str(src)) > argv.index(str(BUILD_ROOT))


def test_command_and_working_folder_come_last(tmp_path: Path) -> None:
    spec = SandboxSpec(root=fake_root(tmp_path), cwd=SRC_DIR)
    argv = argv_of("bwrap", spec, ["uv", "sync", "--frozen"])
    assert argv[-4:] == ["--", "uv", "sync", "--frozen"]
    assert argv[-6:-4] == ["--chdir", str(SRC_DIR)]


# The real sandbox --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox.locate()


HOST_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/venvseal-build/home", "LC_ALL": "C.UTF-8"}


def host_spec(*, network: bool = False, mounts: tuple[Mount, ...] = (),
              env: dict[str, str] = HOST_ENV) -> SandboxSpec:
    """The host's own root as the toolchain root, as ``root = "/"`` in a recipe."""
    return SandboxSpec(root=Path("/"), env=env, network=network, mounts=mounts)


def sh(sandbox: Sandbox, spec: SandboxSpec, script: str, *args: str) -> Completed:
    return sandbox.run(spec, ["sh", "-c", script, "sh", *args], what="a sandboxed test",
                       check=False)


@pytest.mark.parametrize("hidden", ["/root", "/home", "/root/.bashrc"])
def test_host_home_folders_are_not_visible(sandbox: Sandbox, hidden: str) -> None:
    if not os.path.lexists(hidden):
        pytest.skip(f"the host has no {hidden}, so there is nothing to hide")
    res = sh(sandbox, host_spec(network=True), 'ls -d "$1"', hidden)
    assert res.returncode != 0
    assert "No such file or directory" in res.output
    assert sh(sandbox, host_spec(), "test -x /usr/bin/env").returncode == 0  # control


def test_only_the_given_environment_is_set(sandbox: Sandbox,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VENVSEAL_TEST_LEAK", "host value")
    env = {**HOST_ENV, "SPACED": "a b", "EMPTY": ""}
    res = sandbox.run(host_spec(env=env), ["env", "-0"], what="env")
    seen = dict(entry.split("=", 1) for entry in res.output.split("\0") if entry)
    # bwrap itself sets PWD to the --chdir folder; nothing else is added.
    assert seen == {**env, "PWD": str(BUILD_ROOT)}


def host_address() -> str | None:
    """An address of this host other than loopback, or None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("203.0.113.1", 9))  # TEST-NET-3: no packet is sent for UDP
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.fixture()
def listener() -> Iterator[tuple[str, int]]:
    """A TCP server on every host address, accepting connections until the test ends."""
    address = host_address()
    if address is None:
        pytest.skip("the host has no address besides loopback")
    server = socket.create_server(("0.0.0.0", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield address, server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def test_network_reaches_the_host_only_when_allowed(sandbox: Sandbox,
                                                    listener: tuple[str, int]) -> None:
    address, port = listener
    argv = [PYTHON, "-c", CONNECT, address, str(port)]
    with socket.create_connection(listener, timeout=5):
        pass  # the host itself reaches the server
    allowed = sandbox.run(host_spec(network=True), argv, what="connect", check=False)
    assert allowed.returncode == 0, allowed.output
    denied = sandbox.run(host_spec(network=False), argv, what="connect", check=False)
    assert denied.returncode != 0
    assert "Network is unreachable" in denied.output
    interfaces = sandbox.run(host_spec(), [PYTHON, "-c", "import socket\n"
                             "print(sorted(n for _, n in socket.if_nameindex()))"], what="ifs")
    assert interfaces.output.strip() == "['lo']"


def index_address(tmp_path: Path) -> tuple[str, str]:
    """(host name, address) of uv's default package index, as uv.lock names it.

    The name is read from a lock made now, so no index host is written down here.
    """
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "probe"\nversion = "0"\nrequires-python = ">=3.11"\n'
        'dependencies = ["six==1.16.0"]\n'
        '[tool.uv]\nexclude-newer = "2026-11-01T00:00:00Z"\n')
    subprocess.run([str(uv_binary()), "lock", "--quiet", "--python", PYTHON], cwd=tmp_path,
                   env={**os.environ, "UV_PYTHON_DOWNLOADS": "never",
                        "UV_CACHE_DIR": str(tmp_path / "uv-cache")}, check=True)
    lock = tomllib.loads((tmp_path / "uv.lock").read_text())
    [six] = [p for p in lock["package"] if p["name"] == "six"]
    host = urlsplit(six["source"]["registry"]).hostname
    assert host
    infos = socket.getaddrinfo(host, 443, socket.AF_INET, socket.SOCK_STREAM)
    return host, str(infos[0][4][0])


@pytest.mark.slow
def test_package_index_is_unreachable_without_network(sandbox: Sandbox,
                                                      tmp_path: Path) -> None:
    host, address = index_address(tmp_path)
    argv = [PYTHON, "-c", CONNECT, address, "443"]
    allowed = sandbox.run(host_spec(network=True), argv, what=f"connect to {host}", check=False)
    assert allowed.returncode == 0, allowed.output
    denied = sandbox.run(host_spec(network=False), argv, what=f"connect to {host}", check=False)
    assert denied.returncode != 0
    assert "Network is unreachable" in denied.output


@pytest.mark.parametrize("target", ["/usr/venvseal-test", "/usr/lib/venvseal-test",
                                    "/etc/venvseal-test", "/opt/venvseal-test"])
def test_root_is_not_writable(sandbox: Sandbox, target: str) -> None:
    res = sh(sandbox, host_spec(), 'touch "$1"', target)
    assert res.returncode != 0
    assert "Read-only file system" in res.output or "Permission denied" in res.output
    assert not os.path.lexists(target)


def test_writable_mount_is_writable_and_read_only_mount_is_not(sandbox: Sandbox,
                                                               tmp_path: Path) -> None:
    out, src = tmp_path / "out", tmp_path / "src"
    out.mkdir()
    src.mkdir()
    spec = host_spec(mounts=(Mount(host=out, target=OUT_DIR, writable=True),
                             Mount(host=src, target=SRC_DIR)))
    wrote = sh(sandbox, spec, 'echo built > "$1/f"', str(OUT_DIR))
    assert wrote.returncode == 0, wrote.output
    assert (out / "f").read_text() == "built\n"
    refused = sh(sandbox, spec, 'echo x > "$1/f"', str(SRC_DIR))
    assert refused.returncode != 0
    assert "Read-only file system" in refused.output
    assert list(src.iterdir()) == []


# Who a step runs as, and which /etc it sees --------------------------------------------------

PROBE = """\
id -u; id -un
for f in /etc/shadow /etc/gshadow /etc/sudoers /etc/ssh /etc/ssl/private; do
  test -e "$f" && echo "SEEN $f"
done
cat /etc/shadow 2>&1
unshare --user true 2>/dev/null && echo "NESTED USER NAMESPACE"
echo made > "$1/f"
"""
# Runs the probe in the sandbox from another uid: as venvseal would when that user runs it.
RUN_PROBE = """\
import sys
from pathlib import Path
from venvseal.toolchain.sandbox import Mount, OUT_DIR, Sandbox, SandboxSpec
spec = SandboxSpec(root=Path("/"), env={"PATH": "/usr/bin:/bin"}, network=sys.argv[2] == "1",
                   mounts=(Mount(host=Path(sys.argv[1]), target=OUT_DIR, writable=True),))
done = Sandbox.locate().run(spec, ["sh", "-c", sys.argv[3], "sh", str(OUT_DIR)], what="probe",
                            check=False)
print(done.output, end="")
"""
TEST_USER = "venvseal-sbtest"


@pytest.fixture(scope="module")
def unprivileged_user() -> int:
    """The uid of a plain user made for these tests (CI runs as root on a fresh machine)."""
    if subprocess.run(["id", "-u", TEST_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh",
                        TEST_USER], check=True)
    uid = int(subprocess.run(["id", "-u", TEST_USER], capture_output=True, text=True,
                             check=True).stdout)
    assert uid != 0
    return uid


@pytest.mark.parametrize("network", [False, True])
@pytest.mark.parametrize("caller", ["root", "user"])
def test_a_step_is_never_root_and_never_sees_shadow(unprivileged_user: int, caller: str,
                                                   network: bool) -> None:
    assert os.geteuid() == 0, "these tests run as root, as CI does"
    uid = 0 if caller == "root" else unprivileged_user
    with tempfile.TemporaryDirectory() as folder:  # pytest's tmp_path is root's alone
        out = Path(folder)
        os.chown(out, uid, -1)
        check_probe(out, uid, caller, network)


def check_probe(out: Path, uid: int, caller: str, network: bool) -> None:
    prefix = [] if caller == "root" else ["/usr/sbin/runuser", "-u", TEST_USER, "--"]
    # The system python with this checkout's source: the test venv's may not be readable.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(venvseal.__file__).parents[1])}
    done = subprocess.run([*prefix, PYTHON, "-c", RUN_PROBE, str(out), str(int(network)), PROBE],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == [str(SANDBOX_UID), "venvseal"], done.stdout
    assert "SEEN" not in done.stdout
    assert "NESTED USER NAMESPACE" not in done.stdout  # no way to regain capabilities
    assert "cat: /etc/shadow: No such file or directory" in lines
    # What the step wrote belongs on the host to whoever ran venvseal.
    assert (out / "f").read_text() == "made\n"
    assert (out / "f").stat().st_uid == uid
    if caller == "user":  # control: the user itself cannot read the host's shadow file
        assert subprocess.run([*prefix, "cat", "/etc/shadow"],
                              capture_output=True).returncode != 0


def test_a_failing_step_names_its_command_not_bubblewraps_flags() -> None:
    from venvseal.errors import CommandError

    spec = SandboxSpec(root=Path("/"), env=fixed_env([PurePosixPath("/usr/bin")]))
    with pytest.raises(CommandError) as caught:
        Sandbox.locate().run(spec, ["/bin/sh", "-c", "echo the tool says why; exit 3"],
                             what="a probe")
    message = str(caught.value)
    assert message.startswith("a probe failed (exit 3): /bin/sh -c echo the tool says why")
    assert "the tool says why" in message.splitlines()[-1]
    assert "--ro-bind" not in message and "bwrap" not in message


@pytest.mark.parametrize(("program", "says"), [
    ("strip", "add 'binutils' to [toolchain] debian packages"),
    ("venvseal-no-such-tool", "add the package that ships it"),
    ("/usr/bin/venvseal-no-such-tool", "at that path"),
])
def test_a_program_the_toolchain_lacks_is_a_recipe_error(sandbox: Sandbox, program: str,
                                                          says: str) -> None:
    # A toolchain root without the program (an empty usr/bin): bubblewrap cannot exec it.
    env = {**HOST_ENV, "PATH": "/usr/bin"}
    with tempfile.TemporaryDirectory() as root:
        for folder in ("usr/bin", "etc"):
            os.makedirs(os.path.join(root, folder))
        spec = SandboxSpec(root=Path(root), env=env, network=False)
        with pytest.raises(MissingProgramError) as caught:
            sandbox.run(spec, [program, "--version"], what="a step")
    message = str(caught.value)
    assert message.startswith(f"a step: the toolchain has no {program!r}")
    assert says in message
    assert "bwrap" not in message  # bubblewrap's words and flags stay out of it
    assert caught.value.exit_code == 2
