"""Words for people: sizes, what each build stage did, and errors as problems."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from venvseal import pipeline
from venvseal.errors import VenvsealError
from venvseal.store.core import PathInfo

if TYPE_CHECKING:  # pyelftools loads with it: only the deps command needs it
    from venvseal.deps.normalise import NormaliseReport


def human_size(n: int) -> str:
    """``n`` bytes written for people (binary units)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def stage_lines(res: pipeline.BuildResult, previous: PathInfo | None = None) -> list[str]:
    """One line per stage: reused, fetched from a cache, or built and why. ``previous`` is
    the closure the out-link named before this build, if any: what changed since."""
    fetched = set(res.substituted)

    def line(stage: str, path: Path, *, reused: bool, why: str) -> str:
        if path in fetched:
            return f"{stage}: fetched {path.name} from a cache"
        if reused:
            return f"{stage}: reused {path.name} (its inputs are unchanged)"
        return f"{stage}: built {path.name} because {why}"

    lines = [line("deps", res.deps.path, reused=res.deps.reused,
                  why="uv.lock, pyproject.toml, [deps] or the toolchain changed (or this "
                      "store never had it)")]
    lines += [line("fetch", p, reused=True, why="") for p in res.fetched if p in fetched]
    lines.append(line("closure", res.path, reused=res.reused, why=_closure_why(res, previous)))
    return lines


def _closure_why(res: pipeline.BuildResult, previous: PathInfo | None) -> str:
    if previous is None or previous.path == res.path:
        return "its inputs are new to this store (no --out-link named an earlier build)"
    if res.relinked not in previous.references:
        return (f"the dependencies changed (its relinked deps are now {res.relinked.name}; "
                f"{previous.path.name} had others)")
    if set(res.fetched) - set(previous.references):
        return "a [[fetch]] source changed"
    return (f"the app's files or the recipe changed (the dependencies are the same as "
            f"{previous.path.name}'s)")


def normalise_data(report: NormaliseReport) -> dict[str, object]:
    """What the deps stage's normalisation did, for --json."""
    return {"removed_files": report.removed_files, "stripped_elf": report.stripped_elf,
            "references": [r.text.decode("utf-8", "replace")
                           for r in report.references.references],
            "files_changed": report.files_changed,
            "records_rewritten": report.records_rewritten,
            "conflicts": [str(c) for c in report.conflicts],
            "unstripped": list(report.unstripped)}


def normalise_lines(report: NormaliseReport) -> list[str]:
    """The same for people: a warning per conflict, then a summary."""
    return [*(f"warning: {c}" for c in report.conflicts),
            *(f"warning: {rel} kept with its debug info: the toolchain's dynamic loader "
              "refuses it after strip --strip-debug (a binutils bug); its build path is "
              "still replaced" for rel in report.unstripped),
            f"normalised: {report.removed_files} files removed, {report.stripped_elf} ELF "
            f"files stripped, {report.references.summary()}, {report.files_changed} files "
            "changed"]


def error_lines(err: BaseException, message: str) -> list[str]:
    """The message as lines to print: continuation lines indented, and a failed import's
    traceback (older verify output joins its lines with ' | ') unfolded."""
    from venvseal.assemble.verify import VerifyError

    out: list[str] = []
    for line in message.splitlines() or [message]:
        if isinstance(err, VerifyError) and " | " in line:
            head, *rest = line.split(" | ")
            margin = head[:len(head) - len(head.lstrip())]
            module, _, first = head.strip().partition(" ")
            out.append(f"{margin}{module}:")
            out += [f"{margin}    {part.strip()}" for part in [first, *rest] if part.strip()]
        else:
            out.append(line)
    return out


def problems(err: BaseException, message: str) -> list[dict[str, Any]]:
    """The error as a list of problems, each with its ``file``, ``key`` and ``message``
    (``None`` where the error has no file or key)."""
    listed = getattr(err, "problems", None)
    file = getattr(err, "file", None) or getattr(err, "recipe_file", None)
    if listed is not None and isinstance(err, VenvsealError):
        return [{"file": str(file) if file else None, "key": getattr(p, "where", "") or None,
                 "message": getattr(p, "message", str(p))} for p in listed]
    key = getattr(err, "key", None)
    return [{"file": str(file) if file else None, "key": key if isinstance(key, str) else None,
             "message": message}]
