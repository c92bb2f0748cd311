"""Python projects built offline into wheels and installed into the closure.

Workspace members and ``install = true`` fetches become real distributions: built by their
own PEP 517 backend, imported from the deps stage's build environment (no network, no build
isolation), then installed by uv. Their dist-info is therefore complete: metadata, RECORD
and entry points, not a bare copy of a module folder.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tomllib
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from venvseal.assemble import sources
from venvseal.errors import CommandError, VenvsealError
from venvseal.toolchain import sandbox
from venvseal.toolchain.sandbox import Sandbox, SandboxSpec

DEFAULT_BACKEND = "setuptools.build_meta:__legacy__"  # PEP 517, for a project without one
BACKEND_MISSING = "VENVSEAL-BACKEND-MISSING"

# A tiny PEP 517 frontend, run with the toolchain's python inside the sandbox.
FRONTEND = f"""\
import importlib, os, sys
src, out, spec, backend_path = sys.argv[1:5]
if backend_path:
    sys.path[:0] = [os.path.join(src, p) for p in backend_path.split(os.pathsep)]
os.chdir(src)
module, _, attrs = spec.partition(":")
try:
    backend = importlib.import_module(module)
except ImportError as err:
    print("{BACKEND_MISSING}", spec, err, file=sys.stderr)
    sys.exit(3)
for attr in filter(None, attrs.split(".")):
    backend = getattr(backend, attr)
print(backend.build_wheel(out))
"""


class WheelBuildError(VenvsealError):
    """A project could not be built into a wheel offline."""


@dataclass(eq=False)
class DistributionConflictError(VenvsealError):
    """Two distributions would install the same file."""

    path: str
    first: str
    second: str

    template = ("distributions {first} and {second} both install {path}; exclude one of them "
                "([deps] exclude or [assemble] workspace)")


@dataclass(frozen=True, kw_only=True, slots=True)
class Project:
    """A Python project to build and install: what it is called and where its source is."""

    label: str  # for messages: 'workspace member demo-core' or 'fetch[0] (extras)'
    source: Path


def backend_of(source: Path) -> tuple[str, str]:
    """The project's build backend spec and backend-path (os.pathsep-joined)."""
    try:
        data = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return DEFAULT_BACKEND, ""
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise WheelBuildError(f"{source / 'pyproject.toml'}: cannot read it ({err})") from err
    system = data.get("build-system", {})
    return (str(system.get("build-backend", DEFAULT_BACKEND)),
            ":".join(system.get("backend-path", [])))


def _ignored(folder: str, names: list[str]) -> set[str]:
    """The entries of ``folder`` a build never sees: sources.IGNORED, build output such as
    cargo's ``target`` (sources.debris), and symlinks with an absolute target (out-links
    such as ``result``; none would resolve in the sandbox)."""
    skipped = set(shutil.ignore_patterns(*sources.IGNORED)(folder, names)) | sources.debris(names)
    for name in names:
        path = os.path.join(folder, name)
        if os.path.islink(path) and os.readlink(path).startswith("/"):
            skipped.add(name)
    return skipped


def build_wheel(project: Project, work: Path, *, runner: Sandbox, spec: SandboxSpec,
                build_env: PurePosixPath) -> Path:
    """Build ``project`` offline in the sandbox; the wheel's host path (inside ``work``)."""
    src, out = work / "src", work / "wheel"
    # What is copied is what sources.tree_digest hashed for the wheel's key.
    shutil.copytree(project.source, src, symlinks=True, ignore=_ignored)
    out.mkdir()
    backend, backend_path = backend_of(src)
    inner = sandbox.BUILD_ROOT / "work"
    mounts = (*spec.mounts, sandbox.Mount(host=work, target=inner, writable=True))
    # A backend may run an executable its wheel installed (uv_build runs uv-build, found
    # on PATH; maturin, cmake and ninja likewise): the build environment's bin/ goes first.
    env = {**spec.env, "PYTHONPATH": str(build_env),
           "PATH": f"{build_env / 'bin'}:{spec.env.get('PATH', '/usr/bin:/bin')}"}
    job = SandboxSpec(root=spec.root, mounts=mounts, env=env, network=False, cwd=inner)
    argv = [spec.env["VENVSEAL_PYTHON"], "-c", FRONTEND, str(inner / "src"),
            str(inner / "wheel"), backend, backend_path]
    try:
        done = runner.run(job, argv, what=f"building {project.label} into a wheel")
    except CommandError as err:
        if BACKEND_MISSING in err.output_tail:
            raise WheelBuildError(
                f"{project.label}: its build backend {backend} is not available offline; add "
                "the package providing it to the project's build-system.requires or to "
                "[deps] build-requires, then run 'venvseal deps --update-hash'") from err
        raise WheelBuildError(f"{project.label}: building a wheel failed:\n"
                              f"{err.output_tail}") from err
    name = done.output.strip().splitlines()[-1]
    wheel = out / name
    if not wheel.is_file():
        raise WheelBuildError(f"{project.label}: the backend reported {name!r} but wrote no "
                              "such wheel")
    return wheel


def wheel_files(wheel: Path) -> tuple[str, list[str]]:
    """The dist-info folder and the site-packages-relative files a wheel installs."""
    with zipfile.ZipFile(wheel) as zf:
        record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        rows = csv.reader(io.StringIO(zf.read(record).decode("utf-8")))
        files = [path for row in rows if row and (path := _site_path(row[0])) is not None]
    return record.split("/", 1)[0], files


def dist_name(dist_info: str) -> str:
    """The distribution a dist-info folder (``name-1.0.dist-info``) belongs to."""
    return dist_info.split("-", 1)[0]


def wheel_destinations(wheel: Path, site_packages: str) -> list[str]:
    """Where each member of ``wheel`` lands, relative to the venv (``site_packages`` is the
    venv-relative site-packages folder)."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
    return [_venv_path(name, site_packages) for name in names]


def _venv_path(name: str, site_packages: str) -> str:
    """Binary distribution format: ``.data/purelib|platlib`` -> site-packages, ``scripts`` ->
    bin, ``data`` -> the venv's top, ``headers`` -> include; anything else -> site-packages."""
    top, _, rest = name.partition("/")
    scheme, _, inner = rest.partition("/")
    if not top.endswith(".data") or not inner:
        return f"{site_packages}/{name}"
    return {"scripts": f"bin/{inner}", "data": inner,
            "headers": f"include/{inner}"}.get(scheme, f"{site_packages}/{inner}")


def _site_path(name: str) -> str | None:
    """Where a wheel member lands, relative to site-packages; None if elsewhere.

    Binary distribution format: ``<name>.data/purelib/`` and ``platlib/`` go to
    site-packages, the other ``.data`` schemes (scripts, headers, data) outside it.
    """
    top, _, rest = name.partition("/")
    if not top.endswith(".data"):
        return name
    scheme, _, inner = rest.partition("/")
    return inner if scheme in ("purelib", "platlib") and inner else None


def dist_info_owners(site_packages: Path) -> dict[str, str]:
    """Every file listed in an installed RECORD -> the dist-info folder listing it."""
    owners: dict[str, str] = {}
    for record in sorted(site_packages.glob("*.dist-info/RECORD")):
        with record.open(encoding="utf-8", newline="") as f:
            for row in csv.reader(f):
                if row:
                    owners.setdefault(row[0], record.parent.name)
    return owners


def check_conflicts(wheel: Path, owners: Mapping[str, str]) -> None:
    """Refuse a wheel that would overwrite a file another distribution installed
    (``owners`` as from :func:`dist_info_owners`)."""
    dist_info, files = wheel_files(wheel)
    for path in files:
        if path in owners and not path.endswith(".dist-info/RECORD"):
            raise DistributionConflictError(path, dist_name(owners[path]), dist_name(dist_info))
