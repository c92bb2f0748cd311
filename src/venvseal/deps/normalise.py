"""Make the venv uv installed into the same bytes every time the same inputs go in.

The deps stage's output is content-addressed, so anything that varies between two runs of
``uv sync`` must go or be made canonical before it is hashed:

- files uv or pip write per run (``bin/``'s launchers with their absolute shebangs, its
  interpreter symlinks and activate scripts, uv's ``.lock``, ``CACHEDIR.TAG`` and
  ``.gitignore``, the ``uv_cache.json`` of a path install, bytecode); what a distribution
  ships in ``bin/`` stays, its ``#!python`` shebang put back (:mod:`venvseal.deps.scripts`);
- ``pyvenv.cfg``, which names the build interpreter's directory and uv's version;
- ELF debug info, which records uv's random sdist directory (DW_AT_comp_dir), and the GNU
  build-id the linker computed over it (see :mod:`venvseal.buildid`);
- any other mention of the sandbox's build root or a Nix store path (see :mod:`venvseal.refs`);
- the RECORD of each installed distribution, which must list what is now on disk
  (binary distribution format spec, "The RECORD file").

:func:`normalise_venv` runs these steps in order; each step plans from a sorted walk first
and then acts, and the report says what changed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from venvseal import fsutil
from venvseal.deps import scripts
from venvseal.deps.records import find_records, parse_rows, target_of, update_records
from venvseal.deps.strip import GuardedStrip, strip_safely
from venvseal.deps.survey import copy_linked, delete, survey
from venvseal.deps.survey import remove_build_litter as remove_build_litter  # the assembly's
from venvseal.elf.buildid import is_elf, set_deterministic_build_id
from venvseal.elf.refs import (
    DEFAULT_BUILD_ROOT,
    Reference,
    ReferencesRemainError,
    RefReport,
    Spotter,
    compile_pattern,
    find_in,
    find_in_file,
    report_of,
    strip_references,
)
from venvseal.errors import LocatedError
from venvseal.store.nar import NarResult, nar_hash
from venvseal.toolchain.sandbox import OUT_DIR

# The assemble stage replaces this with the runtime interpreter's directory.
PYTHON_HOME_PLACEHOLDER = "@python-home@"
# pyvenv.cfg keys kept after ``home``, in this order; uv's ``uv``, ``prompt`` and any other go.
PYVENV_KEYS = ("implementation", "version_info", "include-system-site-packages")
# What uv writes per run and is deleted (bin/, markers, bytecode): see survey.py.



class NormaliseError(LocatedError):
    """The venv cannot be normalised; names the file and what to do."""


@dataclass(frozen=True, slots=True)
class NormaliseReport:
    """What :func:`normalise_venv` did."""

    removed_files: int  # files and symlinks deleted (bin/, uv's markers, bytecode)
    stripped_elf: int  # ELF files with debug info, stripped
    references: RefReport  # build-time references found, and then replaced
    changed: frozenset[Path]  # kept files whose bytes changed (ELF edits, references)
    records: frozenset[Path]  # dist-info RECORD files updated
    conflicts: tuple[Conflict, ...] = ()  # files two distributions installed differently
    unstripped: tuple[str, ...] = ()  # files strip would have broken: kept with debug info

    @property
    def files_changed(self) -> int:
        return len(self.changed)

    @property
    def records_rewritten(self) -> int:
        return len(self.records)


@dataclass(frozen=True, slots=True)
class Conflict:
    """A file that several distributions install with different contents: removed."""

    path: str  # relative to the venv
    distributions: tuple[str, ...]

    def __str__(self) -> str:
        return (f"{self.path} is installed by {' and '.join(self.distributions)} with different "
                "contents; removed, so the output does not depend on install order")


def normalise_venv(venv: Path, *, strip: GuardedStrip,
                   build_root: bytes = DEFAULT_BUILD_ROOT,
                   venv_path: PurePosixPath = OUT_DIR) -> NormaliseReport:
    """Normalise the venv at ``venv`` in place; see the module docstring for the steps.

    Only the files this edits are searched for references here: :func:`hash_normalised`
    must follow, which searches every other file in the NAR hash's own read of it (one
    read of every file, not two).

    ``strip`` strips the debug info of the files it is given, guarded by the toolchain's
    loader (once, with every ELF file that has debug info, as ``venv / relative path``,
    sorted; not called when there are none; see strip.py). ``build_root`` is the sandbox's
    build-time prefix whose every mention is replaced; ``venv_path`` is where the venv was
    when uv installed it (scripts' shebangs name it).
    """
    try:
        _check_venv(venv)
        # bin/ goes but for the distributions' own scripts (.data/scripts): see scripts.py.
        kept = scripts.shipped_scripts(venv, find_records(venv))
        found = survey(venv, kept)  # one walk for the litter and the ELF files
        removed = delete(found.litter)
        conflicts = remove_conflicts(venv)
        gone = {venv / c.path for c in conflicts}
        removed |= gone
        # What this edits in place gets an inode of its own first (the hash's seal copies
        # any other linked file, see narseal.py; hash_normalised those it edits).
        copy_linked(sorted(_linked({*found.maybe_elf(), *kept, venv / "pyvenv.cfg"} - gone)))
        write_pyvenv_cfg(venv)
        shebangs = scripts.write_placeholders(kept - gone, venv_path)
        elf_files = [path for path in found.maybe_elf() if path not in gone and is_elf(path)]
        before = {path: _sha256(path) for path in elf_files}
        stripped = strip_safely(elf_files, strip=strip)
        rewritten_files = [venv / "pyvenv.cfg", *sorted(shebangs), *stripped.stripped,
                           *stripped.kept]
        references = _references(venv, rewritten_files, prefixes=(build_root,))
        replaced = {venv / path for path in strip_references(venv, references)}
        # The build-id hashes the file's final bytes, so it comes after the references are
        # replaced: a random build path left in .rodata (__FILE__) would otherwise make it differ.
        # A program a wheel ships in bin/ (maturin's) keeps its bytes unless they were edited.
        edited = replaced | set(stripped.stripped)
        for path in elf_files:
            if path not in kept or path in edited:
                set_deterministic_build_id(path)
        changed = replaced | shebangs | {p for p in elf_files if _sha256(p) != before[p]}
        rewritten = update_records(venv, removed, changed)
        _assert_clean(venv, references)
    except OSError as err:
        raise _not_normalised(venv, err) from err
    return NormaliseReport(len(removed), len(stripped.stripped), references,
                           frozenset(p.relative_to(venv) for p in changed), rewritten, conflicts,
                           tuple(p.relative_to(venv).as_posix() for p in stripped.kept))


def _linked(paths: Collection[Path]) -> set[Path]:
    return {path for path in paths if path.lstat().st_nlink > 1}


def _not_normalised(venv: Path, err: OSError) -> NormaliseError:
    where = Path(err.filename) if err.filename else venv
    return NormaliseError(str(where), err.strerror or str(err),
                          "check that the venv is complete and writable")


def hash_normalised(venv: Path, report: NormaliseReport, *, seal_mtime: int | None,
                    build_root: bytes = DEFAULT_BUILD_ROOT) -> tuple[NarResult, NormaliseReport]:
    """The NAR hash of a venv :func:`normalise_venv` normalised, sealed in the same walk with
    ``seal_mtime`` (see nar_hash), and the normalisation and its report completed.

    The hash's walk shows every file to a :class:`Spotter`; the few files it names are
    searched, and references found replaced as normalise_venv replaces them (same length,
    then build-ids and RECORDs) before the venv is hashed again. Strip removes the debug
    info that holds most build paths, so that second hash is rare; the survey's own read of
    every file cost 0.1 s of the demo's warm stage and 0.85 s of authentik's (issue 16).
    """
    spotter = Spotter((build_root,))
    hashed = nar_hash(venv, seal_mtime=seal_mtime, watch=spotter)
    pattern = compile_pattern((build_root,))
    found: dict[Path, set[bytes]] = {}
    try:
        for name in sorted(spotter.files):
            path = os.fsdecode(name)
            if texts := find_in(path, os.path.islink(path), pattern):
                found[Path(path).relative_to(venv)] = texts
        if not found:
            return hashed, report
        if seal_mtime is not None:  # sealed by the walk: open what the edits write
            fsutil.make_tree_writable(venv)
        files = [venv / rel for rel in found if not (venv / rel).is_symlink()]
        copy_linked(sorted(_linked(files)))  # the seal leaves a sealed file's links alone
        for edited_file in files:
            os.chmod(edited_file, edited_file.stat().st_mode | stat.S_IWUSR)
        references = report_of(found, (build_root,))
        replaced = {venv / rel for rel in strip_references(venv, references)}
        for edited in sorted(replaced):  # after the edit: the build-id hashes the final bytes
            if not edited.is_symlink() and is_elf(edited):
                set_deterministic_build_id(edited)
        records = update_records(venv, (), replaced)
        _assert_clean(venv, references)
    except OSError as err:
        raise _not_normalised(venv, err) from err
    completed = replace(report, references=report_of({**report.references.by_file(), **found},
                                                     (build_root,)),
                        changed=report.changed | {p.relative_to(venv) for p in replaced},
                        records=report.records | records)
    return nar_hash(venv, seal_mtime=seal_mtime), completed


def remove_conflicts(venv: Path) -> tuple[Conflict, ...]:
    """Delete every file that RECORDs of several distributions list with different hashes.

    uv installs wheels in parallel (and, even serially, in an order that varies with the
    cache), so which copy survives differs between runs: authentik's pyrad and
    django-tenants both ship a different ``docs/Makefile``. The same content listed twice
    (old-style namespace ``__init__.py`` files) is not a conflict and stays.
    """
    owners: dict[str, dict[str, set[str]]] = {}
    for record in find_records(venv):
        dist = record.parent.name.split("-", 1)[0]
        base = os.fspath(record.parent.parent)
        for _line, row in parse_rows(record.read_text(encoding="utf-8")):
            if row and len(row) == 3 and row[1]:
                target = target_of(base, row[0])
                owners.setdefault(target, {}).setdefault(row[1], set()).add(dist)
    conflicts = []
    for target, by_hash in sorted(owners.items()):
        if len(by_hash) > 1:
            dists = tuple(sorted(d for ds in by_hash.values() for d in ds))
            conflicts.append(Conflict(os.path.relpath(target, venv), dists))
            if os.path.lexists(target):
                os.unlink(target)
    return tuple(conflicts)


def _references(venv: Path, edited: Sequence[Path], prefixes: tuple[bytes, ...]) -> RefReport:
    """The references in the files normalise_venv edited (pyvenv.cfg, shebangs, the stripped
    ones), as they are now; the other files' are found as they are hashed."""
    pattern = compile_pattern(prefixes)
    return report_of({path.relative_to(venv): texts for path in edited
                      if (texts := find_in_file(os.fspath(path), pattern)[0])}, prefixes)


def _check_venv(venv: Path) -> None:
    if not (venv / "pyvenv.cfg").is_file():
        raise NormaliseError(str(venv), "not a virtual environment (no pyvenv.cfg)",
                             "point venvseal at the directory uv sync created")


def _assert_clean(venv: Path, report: RefReport) -> None:
    """Check that no reference is left where the scan found one. Only those files can hold
    any: the scan read every file after strip, and the later edits (same-length fillers,
    build-ids, RECORD hashes) write none. Re-reading the whole venv cost ~0.15 s on the demo."""
    pattern = compile_pattern(report.prefixes, report.nix_store)
    left: dict[bytes, list[Path]] = {}
    for rel in sorted(report.files):
        path = venv / rel
        data = os.fsencode(os.readlink(path)) if path.is_symlink() else path.read_bytes()
        for text in sorted({m.group(0) for m in pattern.finditer(data)}):
            left.setdefault(text, []).append(rel)
    if left:
        raise ReferencesRemainError(venv, RefReport(report.prefixes, report.nix_store, tuple(
            Reference(text, tuple(files)) for text, files in sorted(left.items()))))


def canonical_pyvenv_cfg(text: str) -> str:
    """``pyvenv.cfg`` with ``home`` replaced by the placeholder and only PYVENV_KEYS kept.

    Parsed as CPython's site.py does: ``key = value`` lines, keys stripped and lower-cased,
    a later line overriding an earlier one.
    """
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip().lower()] = value.strip()
    lines = [f"home = {PYTHON_HOME_PLACEHOLDER}"]
    lines += [f"{key} = {values[key]}" for key in PYVENV_KEYS if key in values]
    return "\n".join(lines) + "\n"


def write_pyvenv_cfg(venv: Path) -> None:
    """Rewrite ``venv/pyvenv.cfg`` in canonical form."""
    cfg = venv / "pyvenv.cfg"
    canonical = canonical_pyvenv_cfg(cfg.read_text(encoding="utf-8"))
    cfg.write_bytes(canonical.encode("utf-8"))


def _sha256(path: Path) -> bytes:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()
