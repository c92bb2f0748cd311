"""The offline assembly stage: the pinned venv becomes a runnable, complete closure.

Runs without network. The closure is built in a temporary folder that the sandbox mounts at
the closure's final logical path (``/venvseal/store/<hash>-<name>``), so everything that
embeds a path (scripts, substitutions) embeds the one it will run at. The dependencies are
not copied in: the closure is a forest of links into the relinked deps path (forest.py,
relinked.py), and holds as its own only what it adds or changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Protocol

from venvseal.assemble import commands, entrypoints, pythonpath, relinked, sources, wheels
from venvseal.assemble import textedit as substitute
from venvseal.assemble.forest import Forest
from venvseal.deps.normalise import PYTHON_HOME_PLACEHOLDER, remove_build_litter, update_records
from venvseal.deps.stage import BUILD_ENV
from venvseal.errors import EXIT_USAGE, VenvsealError
from venvseal.recipe.model import Recipe
from venvseal.recipe.uvlock import Lock
from venvseal.store.core import STORE_DIR, StorePath
from venvseal.toolchain import sandbox
from venvseal.toolchain.resolve import ResolvedToolchain, uv_binary
from venvseal.toolchain.sandbox import Mount, Sandbox, SandboxSpec

STAGE_VERSION = "assemble-3"  # bump whenever the same inputs would give other bytes
DEPS_DIR = sandbox.BUILD_ROOT / "deps"


class AssembleError(VenvsealError):
    """The closure cannot be assembled as the recipe says."""


class WorkspaceError(AssembleError):
    """``[assemble] workspace`` names a project the assembly cannot install (exit 2)."""

    exit_code = EXIT_USAGE

    def __init__(self, rec: Recipe, unknown: Sequence[str], lock: Lock) -> None:
        self.where = f"{rec.file}: {rec.key_prefix}assemble.workspace"
        self.unknown = tuple(unknown)
        self.installable = tuple(sorted(m.name for m in lock.installed_members()))
        root = lock.root_package()
        self.virtual_root = root.name if root is not None and root.source_kind == "virtual" \
            else None
        super().__init__(str(self))

    def __str__(self) -> str:
        names = ", ".join(self.installable) or "none"
        why = (f" ({self.virtual_root} is the root project, which uv does not install: it has "
               "no [build-system], or tool.uv.package is false)"
               if self.virtual_root in self.unknown else "")
        return (f"{self.where} names {', '.join(self.unknown)}, not a package of the uv "
                f"workspace{why}; the packages it can install are: {names}; fix the list")


@dataclass(frozen=True, kw_only=True, slots=True)
class Fetched:
    """A realised [[fetch]] source: its name, store path and logical path."""

    name: str
    path: StorePath
    logical: PurePosixPath
    install: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class AssembleInputs:
    """Everything the closure depends on; ``fingerprint`` names its store path."""

    recipe: Recipe
    toolchain: ResolvedToolchain
    deps: StorePath  # for its build environment
    relinked: StorePath  # what the closure links to
    fetched: tuple[Fetched, ...]
    members: tuple[tuple[str, str], ...]  # (name, folder relative to the project)
    sources: tuple[tuple[str, str], ...]  # (what, digest) of every project input used

    def fingerprint(self) -> str:
        doc = {
            "stage": STAGE_VERSION,
            "recipe": self.recipe.canonical("app", "assemble", "substitute", "verify"),
            "toolchain": [self.toolchain.identity, str(self.toolchain.python),
                          [str(d) for d in self.toolchain.library_dirs],
                          [str(p) for p in self.toolchain.path], self.toolchain.uv_version],
            "deps": self.deps.name,
            "relinked": self.relinked.name,
            "fetched": [(f.name, f.path.name, f.install) for f in self.fetched],
            "members": self.members,
            "sources": self.sources,
        }
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def collect_inputs(rec: Recipe, tc: ResolvedToolchain, deps: StorePath, linked: StorePath,
                   fetched: tuple[Fetched, ...], lock: Lock) -> AssembleInputs:
    """Digest every project file the stage reads: members, copy sources and patch files."""
    wanted = rec.assemble.workspace
    installable = lock.installed_members()
    members = tuple(sorted((m.name, m.source or ".") for m in installable
                           if wanted is None or m.name in wanted))
    if wanted is not None and (unknown := set(wanted) - {name for name, _ in members}):
        raise WorkspaceError(rec, sorted(unknown), lock)
    # Absolute symlinks are left out, as wheels.build_wheel leaves them: they cannot resolve
    # in the sandbox, and an out-link in the root project (result -> the closure) would
    # otherwise change the closure's key at every build.
    digests = [(f"member:{name}", sources.tree_digest(
        sources.inside(rec.project, rel, what=f"workspace member {name}"),
        absolute_links=False)) for name, rel in members]
    for i, rule in enumerate(rec.assemble.copy):
        if rule.from_.startswith("@"):
            continue  # from a fetched source: keyed by that store path
        path = sources.inside(rec.project, rule.from_,
                              what=f"{rec.key_prefix}assemble.copy[{i}].from")
        digests.append((f"copy:{i}", sources.tree_digest(path, rule.exclude)))
    for i, sub in enumerate(rec.substitute):
        if sub.patch is not None:
            path = sources.inside(rec.base, os.path.relpath(sub.patch, rec.base),
                                  what=f"{rec.key_prefix}substitute[{i}].patch")
            digests.append((f"patch:{i}", sources.tree_digest(path)))
    return AssembleInputs(recipe=rec, toolchain=tc, deps=deps, relinked=linked,
                          fetched=fetched, members=members, sources=tuple(digests))


@dataclass(frozen=True, kw_only=True, slots=True)
class Layout:
    """Where things are in the closure, on the host and as the closure sees itself."""

    out: Path  # host folder being built
    logical: PurePosixPath  # the closure's path at run time
    python_version: str  # "3.11"
    forest: Forest  # the links into the relinked deps; every edit goes through it

    @property
    def site_packages(self) -> str:
        return f"lib/python{self.python_version}/site-packages"

    def placeholders(self, fetched: tuple[Fetched, ...]) -> dict[str, str]:
        values = {"out": str(self.logical), "python": str(self.logical / "bin" / "python"),
                  "site-packages": str(self.logical / self.site_packages)}
        values.update({f.name: str(f.logical) for f in fetched})
        return values


def plant(linked: Path, out: Path) -> Forest:
    """Create ``out`` as a forest of links into the relinked deps ``linked``."""
    out.mkdir()
    forest = Forest(out, linked)
    forest.plant()
    return forest


def python_version(out: Path) -> str:
    """X.Y of the venv's interpreter, from pyvenv.cfg's version_info."""
    for line in (out / "pyvenv.cfg").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "version_info":
            return ".".join(value.strip().split(".")[:2])
    raise AssembleError(f"{out / 'pyvenv.cfg'} has no version_info; rebuild the deps stage")


def restore_venv(layout: Layout, python: PurePosixPath) -> None:
    """pyvenv.cfg with the interpreter's folder, and bin/python{,3,3.X} -> the interpreter."""
    cfg = layout.forest.own_file(layout.out / "pyvenv.cfg")
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(PYTHON_HOME_PLACEHOLDER,
                                                           str(python.parent)),
                   encoding="utf-8")
    python_links(layout, python)


def python_links(layout: Layout, python: PurePosixPath) -> None:
    """bin/python, bin/python3 and bin/python3.X -> the toolchain's interpreter."""
    bin_dir = layout.forest.own_dir(layout.out / "bin")
    for name in ("python", "python3", f"python{layout.python_version}"):
        os.symlink(str(python), bin_dir / name)


def _spec(inputs: AssembleInputs, layout: Layout) -> SandboxSpec:
    env = sandbox.fixed_env(inputs.toolchain.path)
    env.update({"VENVSEAL_PYTHON": str(inputs.toolchain.python),
                "UV_NO_CACHE": "1", "UV_OFFLINE": "1", "UV_LINK_MODE": "copy",
                "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"})
    mounts = [Mount(host=layout.out, target=layout.logical, writable=True),
              Mount(host=inputs.relinked, target=STORE_DIR / inputs.relinked.name),
              Mount(host=uv_binary(), target=sandbox.TOOLS_DIR / "uv")]
    mounts += [Mount(host=f.path, target=f.logical) for f in inputs.fetched]
    return SandboxSpec(root=inputs.toolchain.root, mounts=tuple(mounts), env=env,
                       network=False, cwd=sandbox.BUILD_ROOT)


class WheelCache(Protocol):
    """Returns the wheel for (name, key), calling ``build(work, deps)`` only if it has none
    (``deps``: the host path of the deps store path, whose build environment it uses)."""

    def __call__(self, name: str, key: str, build: Callable[[Path, Path], Path]) -> Path: ...


def wheel_key(inputs: AssembleInputs, source_digest: str) -> str:
    """What a project's wheel depends on: its source, the backends (in the deps path's
    build environment), the interpreter that runs them."""
    tc = inputs.toolchain
    doc = [STAGE_VERSION, source_digest, inputs.deps.name, tc.identity, str(tc.python)]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


def _build_wheel(project: wheels.Project, work: Path, deps: Path, *, runner: Sandbox,
                 spec: SandboxSpec) -> Path:
    """Build ``project`` with the backends of the deps path's build environment."""
    job = replace(spec, mounts=(*spec.mounts, Mount(host=deps, target=DEPS_DIR)))
    return wheels.build_wheel(project, work, runner=runner, spec=job,
                              build_env=DEPS_DIR / BUILD_ENV)


def install_projects(inputs: AssembleInputs, layout: Layout, owners: dict[str, str], *,
                     runner: Sandbox, spec: SandboxSpec,
                     wheel_cache: WheelCache) -> frozenset[Path]:
    """Build every member and installable fetch offline (or reuse its wheel from
    ``wheel_cache``) and install them all without deps; their files join ``owners``.
    Returns the ``bin/`` files their wheels ship as they are (``.data/scripts``)."""
    digests = dict(inputs.sources)
    projects = [(wheels.Project(label=f"the root project {name}" if rel == "." else
                                f"workspace member {name}", source=inputs.recipe.project / rel),
                 name, digests[f"member:{name}"]) for name, rel in inputs.members]
    projects += [(wheels.Project(label=f"fetch {f.name}", source=f.path), f.name, f.path.name)
                 for f in inputs.fetched if f.install]
    site = layout.out / layout.site_packages
    before = set(site.glob("*.dist-info"))
    built: list[Path] = []
    scripts: list[Path] = []
    for project, name, digest in projects:
        wheel = wheel_cache(name, wheel_key(inputs, digest),
                            partial(_build_wheel, project, runner=runner, spec=spec))
        wheels.check_conflicts(wheel, owners)
        for dest in wheels.wheel_destinations(wheel, layout.site_packages):
            layout.forest.own_dir((layout.out / dest).parent)  # uv writes there
            if dest.startswith("bin/"):
                scripts.append(layout.out / dest)
        dist_info, files = wheels.wheel_files(wheel)
        owners.update(dict.fromkeys(files, dist_info))  # two projects may clash, too
        built.append(wheel)
    if built:
        # One uv call for all: each call reads every installed distribution first.
        mounts = [Mount(host=w.parent, target=sandbox.BUILD_ROOT / f"wheels-{i}")
                  for i, w in enumerate(built)]
        inner = [str(sandbox.BUILD_ROOT / f"wheels-{i}" / w.name) for i, w in enumerate(built)]
        job = SandboxSpec(root=spec.root, env=spec.env, network=False, cwd=spec.cwd,
                          mounts=(*spec.mounts, *mounts))
        runner.run(job, ["uv", "pip", "install", "--no-deps", "--no-index", "--python",
                         str(layout.logical / "bin" / "python"), *inner],
                   what="installing " + ", ".join(p.label for p, _, _ in projects))
    if projects:
        removed = set()
        for new in sorted(set(site.glob("*.dist-info")) - before):
            direct_url = new / "direct_url.json"
            if direct_url.exists():  # names the wheel's temporary build path (PEP 610)
                direct_url.unlink()
                removed.add(direct_url)
        # uv's per-run files (.lock, uv_cache.json with a time stamp) and the launchers it
        # wrote go (write_entry_points makes them again); what a wheel ships in bin/ (a
        # program maturin built from Rust, a shell script) is put back as it was installed.
        kept = {p: (p.read_bytes(), os.access(p, os.X_OK)) for p in scripts if p.is_file()}
        update_records(layout.out, removed | (remove_build_litter(layout.out) - kept.keys()), ())
        python_links(layout, inputs.toolchain.python)
        for path, (data, executable) in kept.items():
            path.write_bytes(data)
            os.chmod(path, 0o755 if executable else 0o644)
        return frozenset(kept)
    return frozenset()


def copy_sources(inputs: AssembleInputs, layout: Layout, owners: dict[str, str]) -> None:
    """The recipe's copy rules and top-level links."""
    rec = inputs.recipe
    fetched = {f.name: f.path for f in inputs.fetched}
    for i, rule in enumerate(rec.assemble.copy):
        where = f"{rec.key_prefix}assemble.copy[{i}]"
        if rule.from_.startswith("@"):
            name, _, rest = rule.from_[1:].partition("@")
            base = Path(fetched[name])
            source = sources.inside(base, rest.lstrip("/") or ".", what=f"{where}.from")
        else:
            base = rec.project
            source = sources.inside(base, rule.from_, what=f"{where}.from")
        dest = layout.out / rule.to.replace("@site-packages@", layout.site_packages)
        for written in sources.copy_tree(source, dest, rule.exclude, within=base,
                                         make_dir=layout.forest.own_dir):
            rel = os.path.relpath(written, layout.out / layout.site_packages)
            if rel in owners:
                owner = wheels.dist_name(owners[rel])
                raise AssembleError(f"{where}: copying {rule.from_} to {rule.to} would "
                                    f"overwrite {rel}, installed by {owner}; "
                                    "choose another destination")
    for name, target in sorted(rec.assemble.links.items()):
        link = layout.out / name
        if os.path.lexists(link):
            raise AssembleError(f"{rec.key_prefix}assemble.links.{name}: {name} exists in the "
                                "closure already; choose another name")
        os.symlink(target.replace("@site-packages@", layout.site_packages), link)


def write_entry_points(layout: Layout, keep: frozenset[Path] = frozenset()) -> list[Path]:
    """Regenerate bin/ scripts for every console and gui script of every distribution
    (``keep``: files a local package's wheel shipped there). What the dependencies' wheels
    shipped there is linked back from the deps path, a ``#!python`` shebang made the
    closure's python."""
    python = str(layout.logical / "bin" / "python")
    shipped, edited = entrypoints.link_shipped(layout.forest, python)
    keep = keep | shipped
    bin_dir = layout.out / "bin"
    for entry in sorted(bin_dir.iterdir()):
        if not entry.name.startswith("python") and entry not in keep:
            entry.unlink()
    points = entrypoints.read_entry_points(layout.out / layout.site_packages)
    return [*entrypoints.write_scripts(bin_dir, points, python=python), *edited]


def own_records(layout: Layout, changed: set[Path], owners: dict[str, str]) -> None:
    """Make the RECORD of every distribution owning a changed file the closure's own, so
    update_records can rewrite it (it leaves linked ones alone)."""
    site = layout.out / layout.site_packages
    for path in changed:
        rel = os.path.relpath(path, site)
        if rel in owners:
            layout.forest.own_file(site / owners[rel] / "RECORD")


def compile_bytecode(inputs: AssembleInputs, layout: Layout, *, runner: Sandbox,
                     spec: SandboxSpec) -> None:
    """Compile the closure's own modules (the linked ones have theirs in the deps path)."""
    site = layout.out / layout.site_packages
    for folder, dirs, files in os.walk(site):  # symlinked folders are not entered
        if "__pycache__" in dirs and any(f.endswith(".py") and not os.path.islink(
                os.path.join(folder, f)) for f in files):
            layout.forest.own_dir(Path(folder) / "__pycache__")
    relinked.compile_bytecode([layout.logical / layout.site_packages],
                              python=inputs.toolchain.python, what=layout.logical.name,
                              runner=runner, spec=spec)


@dataclass(frozen=True, kw_only=True, slots=True)
class Assembled:
    """A closure built in a temporary folder, with what its checks need to run it."""

    layout: Layout
    spec: SandboxSpec  # the sandbox that sees the closure at its logical path
    values: dict[str, str]  # placeholder values


def assemble(inputs: AssembleInputs, out: Path, *, logical: PurePosixPath, runner: Sandbox,
             wheel_cache: WheelCache,
             on_step: Callable[[str], None] = lambda _msg: None) -> Assembled:
    """Build the closure into ``out`` (created here), to run at ``logical``."""
    forest = plant(inputs.relinked, out)
    layout = Layout(out=out, logical=logical, python_version=python_version(out),
                    forest=forest)
    forest.own_dir(out / layout.site_packages)
    restore_venv(layout, inputs.toolchain.python)
    spec = _spec(inputs, layout)
    # Which dist-info lists each file, read once (authentik: 348 RECORDs through the links).
    owners = wheels.dist_info_owners(out / layout.site_packages)
    shipped = install_projects(inputs, layout, owners, runner=runner, spec=spec,
                               wheel_cache=wheel_cache)
    copy_sources(inputs, layout, owners)
    pythonpath.write(inputs.recipe, layout.out, logical=layout.logical,
                     site_packages=layout.site_packages, closure=forest)
    changed = set(write_entry_points(layout, shipped))
    values = layout.placeholders(inputs.fetched)
    changed |= substitute.apply_all(inputs.recipe, out, values, layout.site_packages,
                                    closure=forest)
    changed |= relinked.relink(out, inputs.toolchain, inputs.recipe.assemble.ignore_missing,
                               edit=forest.own_file)
    own_records(layout, changed, owners)
    update_records(out, (), changed)
    # After every file of the recipe is in place; before bytecode, so what they write is
    # compiled too, and before the checks.
    commands.run_steps(inputs.recipe.assemble.run, key_prefix=inputs.recipe.key_prefix,
                       logical=logical, runner=runner, spec=spec, values=values,
                       on_step=on_step)
    compile_bytecode(inputs, layout, runner=runner, spec=spec)
    return Assembled(layout=layout, spec=spec, values=values)
