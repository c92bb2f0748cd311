"""Turning a failed uv run into one actionable message.

uv's output is long; the user needs the package that failed, the likely missing system
package, and the last lines the compiler printed.
"""

from __future__ import annotations

import re

from venvseal.errors import VenvsealError

# Header (or prefix of one) -> the Debian package that usually provides it.
HEADER_PACKAGES: tuple[tuple[str, str], ...] = (
    ("Python.h", "python3-dev (the toolchain's python3.X-dev)"),
    ("libpq-fe.h", "libpq-dev"),
    ("pg_config.h", "libpq-dev"),
    ("libxml/", "libxml2-dev"),
    ("libxslt/", "libxslt1-dev"),
    ("libexslt/", "libxslt1-dev"),
    ("xmlsec/", "libxmlsec1-dev"),
    ("ltdl.h", "libltdl-dev"),
    ("gssapi", "libkrb5-dev"),
    ("krb5", "libkrb5-dev"),
    ("ffi.h", "libffi-dev"),
    ("openssl/", "libssl-dev"),
    ("zlib.h", "zlib1g-dev"),
    ("yaml.h", "libyaml-dev"),
    ("lber.h", "libldap-dev"),
    ("ldap.h", "libldap-dev"),
    ("sasl/", "libsasl2-dev"),
)
TOOL_PACKAGES = {
    "pg_config": "libpq-dev",
    "krb5-config": "libkrb5-dev",
    "xmlsec1-config": "libxmlsec1-dev",
    "xml2-config": "libxml2-dev",
    "xslt-config": "libxslt1-dev",
    "pkg-config": "pkg-config",
    "gcc": "gcc",
    "cc": "gcc",
    "x86_64-linux-gnu-gcc": "gcc",  # Debian's python3 builds extensions with this CC
}

_FAILED_BUILD = re.compile(r"Failed to build `([^`=]+)(?:==|@)?([^`]*)`")
_MISSING_HEADER = re.compile(r"fatal error: ([\w./+-]+): No such file or directory")
_MISSING_TOOL = re.compile(
    r"(?:([\w.+-]+)(?:: not found| executable not found| command not found| is required)"
    r"|command '([\w.+-]+)' failed: No such file"
    # psycopg-c runs pg_config itself: "No such file or directory: 'pg_config'"
    r"|No such file or directory: '([\w.+-]+)')")
_PYTHON_MISMATCH = re.compile(
    r"(?:interpreter resolved to Python|Python version) ([\d.]+)[^\n]*?"
    r"(?:incompatible|does not satisfy)[^\n]*?`([^`]+)`")
_NETWORK = re.compile(r"dns error|failed to lookup address|Network is unreachable|"
                      r"Connection refused|error sending request|client error \(Connect\)")
# What uv was doing when the network failed, and the url it asked: its first error line and
# its "for url (...)" cause (uv shows index URLs without their credentials).
_FIRST_ERROR = re.compile(r"^error: (.+)$", re.M)
_FOR_URL = re.compile(r"for url \(([^)\s]+)\)")
_STALE_LOCK = "needs to be updated"
# uv: "HTTP status client error (401 Unauthorized) for url (http://host/simple/x/)"; uv shows
# index URLs without their credentials.
_REFUSED = re.compile(r"\((40[13]) ([A-Za-z ]+)\) for url \(([^)\s]+)\)")
# ENOSPC and EDQUOT, as uv (Rust's io::Error: "(os error 28)") and compilers print them.
_DISK_FULL = re.compile(r"No space left on device|Disk quota exceeded|\(os error (?:28|122)\)")


class DepsBuildError(VenvsealError):
    """The dependency stage failed; the message says what and how to fix it."""


class DiskFullError(DepsBuildError):
    """uv ran out of disk space writing the venv, which is built on the store's file system."""

    template = ("the store's file system is full: uv could not write the dependency venv (No "
                "space left on device); free space (venvseal gc) or pass --store DIR on a "
                "larger file system")


def _hint_for_header(header: str) -> str | None:
    for prefix, package in HEADER_PACKAGES:
        if header.startswith(prefix) or prefix in header:
            return package
    return None


def _last_lines(output: str, n: int) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    return "\n".join("  " + ln.strip() for ln in lines[-n:])


def diagnose(output: str, *, lock_file: str, python: str) -> DepsBuildError | None:
    """A specific error for a recognised failure in uv's ``output``; None if unrecognised."""
    if _DISK_FULL.search(output):  # first: a full disk makes any step fail in any way
        return DiskFullError()
    if _STALE_LOCK in output:
        return DepsBuildError(f"{lock_file} is out of date with pyproject.toml; run 'uv lock' "
                              "in the project and rebuild")
    if m := _PYTHON_MISMATCH.search(output):
        return DepsBuildError(
            f"toolchain python {python} is {m.group(1)}, but the project requires Python "
            f"{m.group(2)}; choose a toolchain whose interpreter matches ([toolchain] python, "
            "root or debian packages)")
    failed = _FAILED_BUILD.search(output)
    package = f"{failed.group(1)} {failed.group(2)}".strip() if failed else "a package"
    if m := _MISSING_HEADER.search(output):
        hint = _hint_for_header(m.group(1))
        need = f"; install {hint} in the toolchain" if hint else "; install its -dev package"
        return DepsBuildError(f"building {package} from source failed: header {m.group(1)} is "
                              f"missing{need}\n{_last_lines(output, 8)}")
    tools = (next(t for t in m.groups() if t) for m in _MISSING_TOOL.finditer(output))
    if tool := next((t for t in tools if t in TOOL_PACKAGES), None):
        return DepsBuildError(f"building {package} from source failed: {tool} not found; install "
                              f"{TOOL_PACKAGES[tool]} in the toolchain\n{_last_lines(output, 8)}")
    if m := _REFUSED.search(output):
        return DepsBuildError(f"the package index refused uv: HTTP {m.group(1)} {m.group(2)} for "
                              f"{m.group(3)}; check the index credentials (the url of "
                              "[[tool.uv.index]] in pyproject.toml) and that they allow this "
                              "download")
    # Before the generic build failure: a build fails too when its build requirements
    # cannot be downloaded, and then the compiler has nothing to do with it.
    if _NETWORK.search(output):
        first, url = _FIRST_ERROR.search(output), _FOR_URL.search(output)
        what = "; ".join([*([first.group(1).strip()] if first else []),
                          *([f"url {url.group(1)}"] if url else [])])
        return DepsBuildError("uv could not reach the package index"
                              + (f" ({what})" if what else "") + ": the deps stage needs "
                              "network; check the connection or proxy and rerun\n"
                              f"{_last_lines(output, 4)}")
    if failed:
        return DepsBuildError(f"building {package} from source failed; the compiler's last "
                              f"lines:\n{_last_lines(output, 15)}")
    return None


