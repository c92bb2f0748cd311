"""Turning uv's output into one actionable message, table-driven.

The excerpts are shaped like what uv 0.13 prints in the sandbox (no terminal, so causes come
as ``cause:`` lines), with the build backend's own output in between.
"""

from __future__ import annotations

import pytest

from venvseal.deps.diagnose import DepsBuildError, diagnose

LOCK = "/work/app/uv.lock"
PYTHON = "/usr/bin/python3.11"

STALE_LOCK = """\
Using CPython 3.11.2 interpreter at: /usr/bin/python3.11
Resolved 3 packages in 2ms
error: The lockfile at `uv.lock` needs to be updated, but `--check` was provided.

hint: To update the lockfile, run `uv lock`.
"""

PYTHON_MISMATCH = """\
Using CPython 3.11.2 interpreter at: /usr/bin/python3.11
error: The requested interpreter resolved to Python 3.11.2, which is incompatible with the \
project's Python requirement: `>=3.14` (from `project.requires-python`)
"""


def build_failure(package: str, stdout: list[str], stderr: list[str]) -> str:
    """uv's report of a build backend that exited with an error, around its own output."""
    lines = [
        "Using CPython 3.11.2 interpreter at: /usr/bin/python3.11",
        "Creating virtual environment at: /venvseal-build/out",
        f"   Building {package}",
        f"error: Failed to build `{package}`",
        "  cause: The build backend returned an error",
        "  cause: Call to `setuptools.build_meta.build_wheel` failed (exit status: 1)",
        "",
        "      [stdout]",
        *(f"      {line}" for line in stdout),
        "",
        "      [stderr]",
        *(f"      {line}" for line in stderr),
        "",
        "      hint: This usually indicates a problem with the package or the build environment.",
    ]
    return "\n".join(lines) + "\n"


def compile_line(source: str) -> str:
    return (f"x86_64-linux-gnu-gcc -Wsign-compare -DNDEBUG -g -fwrapv -O2 -Wall -fPIC "
            f"-I/usr/include/python3.11 -c {source} -o build/temp.linux-x86_64-cpython-311/"
            f"{source.removesuffix('.c')}.o")


SETUPTOOLS_PREAMBLE = ["running bdist_wheel", "running build", "running build_py",
                       "copying src/pkg/__init__.py -> build/lib.linux-x86_64-cpython-311/pkg",
                       "running build_ext"]


def missing_header(package: str, source: str, header: str) -> str:
    return build_failure(package, [*SETUPTOOLS_PREAMBLE, compile_line(source)], [
        f"{source}:3:10: fatal error: {header}: No such file or directory",
        f"    3 | #include <{header}>",
        "      |          ^~~~~~~~~~~~~~~",
        "compilation terminated.",
        "error: command '/usr/bin/x86_64-linux-gnu-gcc' failed with exit code 1",
    ])


# xmlsec's C sources failing for a reason no hint covers: the message must name the package
# and show the compiler's last lines. 30 lines of build log come first and must be cut.
XMLSEC_COMPILE_ERROR = build_failure(
    "xmlsec==1.3.17",
    [*SETUPTOOLS_PREAMBLE, *(f"early build log line {i}" for i in range(30)),
     compile_line("src/keys.c")],
    ["src/keys.c: In function 'PyXmlSec_KeyFromFile':",
     "src/keys.c:142:14: error: implicit declaration of function 'xmlSecCryptoAppKeyLoad'",
     "  142 |     key->handle = xmlSecCryptoAppKeyLoad(data, format, pwd, NULL, NULL);",
     "      |                   ^~~~~~~~~~~~~~~~~~~~~~",
     "error: command '/usr/bin/x86_64-linux-gnu-gcc' failed with exit code 1"],
)

PSYCOPG2_PG_CONFIG = build_failure("psycopg2==2.9.10", ["running egg_info"], [
    "Error: pg_config executable not found.",
    "",
    "pg_config is required to build psycopg2 from source.  Please add the directory",
    "containing pg_config to the $PATH or specify the full executable path with the",
    "option:",
    "    python setup.py build_ext --pg-config /path/to/pg_config build ...",
])

# psycopg-c (psycopg 3, as authentik uses it) words it differently.
PSYCOPG_C_PG_CONFIG = build_failure("psycopg-c==3.2.9", [*SETUPTOOLS_PREAMBLE], [
    "couldn't run 'pg_config' --includedir: [Errno 2] No such file or directory: 'pg_config'",
    "error: [Errno 2] No such file or directory: 'pg_config'",
])

NO_COMPILER = build_failure("lxml==6.0.2", [*SETUPTOOLS_PREAMBLE, compile_line("src/lxml/etree.c")],
                            ["error: command 'x86_64-linux-gnu-gcc' failed: No such file or "
                             "directory"])

DNS_ERROR = """\
Using CPython 3.11.2 interpreter at: /usr/bin/python3.11
Creating virtual environment at: /venvseal-build/out
error: Failed to download `idna==3.10`
  cause: Request failed after 3 retries in 7.6s
  cause: Failed to fetch: idna-3.10-py3-none-any.whl
  cause: error sending request for url (idna-3.10-py3-none-any.whl)
  cause: client error (Connect)
  cause: dns error
  cause: error resolving DNS
  cause: failed to lookup address information: Temporary failure in name resolution

hint: `idna` (v3.10) was included because `app` (v0) depends on `idna`
"""

# The network also fails builds: their build requirements are downloaded first.
BUILD_REQUIREMENTS_OFFLINE = """\
   Building cext @ file:///venvseal-build/src/vendor/cext
error: Failed to build `cext @ file:///venvseal-build/src/vendor/cext`
  cause: Failed to resolve requirements from `build-system.requires`
  cause: No solution found when resolving: `setuptools==80.9.0`
  cause: Request failed after 3 retries in 6.3s
  cause: client error (Connect)
  cause: dns error
  cause: failed to lookup address information: Temporary failure in name resolution
"""

DISK_FULL = """\
Prepared 3 packages in 366ms
error: Failed to install: django-5.2.8-py3-none-any.whl (django==5.2.8)
  cause: Failed to copy to `/venvseal-build/out/lib/python3.11/site-packages/django/x.po`
  cause: failed to copy file from /venvseal-build/cache/archive-v0/Ir3P/django/x.po to \
/venvseal-build/out/lib/python3.11/site-packages/django/.tmpz3VVHz: No space left on device \
(os error 28)
"""

UNAUTHORIZED = """\
error: Failed to download `tinypkg==1.0`
  cause: Failed to fetch: http://127.0.0.1:8765/files/tinypkg-1.0-py3-none-any.whl
  cause: HTTP status client error (401 Unauthorized) for url \
(http://127.0.0.1:8765/files/tinypkg-1.0-py3-none-any.whl)
"""

# Each row: what happened, uv's output, fragments the message must contain, and fragments it
# must not (wrong advice, or log lines too far from the end to matter).
RECOGNISED = [
    ("stale lock", STALE_LOCK, [LOCK, "out of date", "'uv lock'"], []),
    ("python mismatch", PYTHON_MISMATCH, [PYTHON, "3.11.2", ">=3.14", "[toolchain] python"],
     ["uv lock"]),
    ("libpq-fe.h", missing_header("psycopg-c==3.2.9", "psycopg_c/pq.c", "libpq-fe.h"),
     ["psycopg-c 3.2.9", "libpq-fe.h", "install libpq-dev in the toolchain"], []),
    ("xmlsec/xmlsec.h", missing_header("xmlsec==1.3.17", "src/main.c", "xmlsec/xmlsec.h"),
     ["xmlsec 1.3.17", "xmlsec/xmlsec.h", "libxmlsec1-dev"], []),
    ("gssapi/gssapi.h", missing_header("gssapi==1.9.0", "gssapi/raw/misc.c", "gssapi/gssapi.h"),
     ["gssapi 1.9.0", "gssapi/gssapi.h", "libkrb5-dev"], []),
    ("ffi.h", missing_header("cffi==1.17.1", "src/c/_cffi_backend.c", "ffi.h"),
     ["cffi 1.17.1", "ffi.h", "libffi-dev"], []),
    ("unknown header", missing_header("oddity==0.1", "odd.c", "odd/odd.h"),
     ["oddity 0.1", "odd/odd.h", "its -dev package"], []),
    ("psycopg2 pg_config", PSYCOPG2_PG_CONFIG,
     ["psycopg2 2.9.10", "pg_config not found", "libpq-dev"], []),
    ("psycopg-c pg_config", PSYCOPG_C_PG_CONFIG,
     ["psycopg-c 3.2.9", "pg_config not found", "libpq-dev"], []),
    ("no compiler", NO_COMPILER, ["lxml 6.0.2", "not found", "install gcc"], []),
    ("compile error", XMLSEC_COMPILE_ERROR,
     ["building xmlsec 1.3.17 from source failed", "last lines",
      "implicit declaration of function 'xmlSecCryptoAppKeyLoad'",
      "failed with exit code 1", "hint: This usually indicates"],
     ["early build log line 0", "early build log line 10", "install"]),
    ("dns error", DNS_ERROR, ["needs network", "dns error", "(Failed to download `idna==3.10`; "
                              "url idna-3.10-py3-none-any.whl)"], ["building"]),
    ("build requirements offline", BUILD_REQUIREMENTS_OFFLINE, ["needs network", "dns error"],
     ["compiler"]),
    ("disk full", DISK_FULL, ["store's file system is full", "venvseal gc", "--store DIR"],
     ["django/x.po", "compiler"]),
    ("index refuses the credentials", UNAUTHORIZED,
     ["HTTP 401 Unauthorized", "http://127.0.0.1:8765/files/tinypkg-1.0-py3-none-any.whl",
      "[[tool.uv.index]]"], ["network"]),
]


@pytest.mark.parametrize(("case", "output", "wanted", "unwanted"), RECOGNISED,
                         ids=[row[0] for row in RECOGNISED])
def test_recognised_failures(case: str, output: str, wanted: list[str],
                             unwanted: list[str]) -> None:
    err = diagnose(output, lock_file=LOCK, python=PYTHON)
    assert isinstance(err, DepsBuildError), case
    message = str(err)
    for fragment in wanted:
        assert fragment in message, f"{case}: {fragment!r} not in:\n{message}"
    for fragment in unwanted:
        assert fragment not in message, f"{case}: {fragment!r} in:\n{message}"
    assert err.exit_code == 1


def test_first_line_is_the_diagnosis_and_the_rest_is_indented_output() -> None:
    err = diagnose(missing_header("xmlsec==1.3.17", "src/main.c", "xmlsec/xmlsec.h"),
                   lock_file=LOCK, python=PYTHON)
    assert err is not None
    first, *rest = str(err).splitlines()
    assert first.startswith("building xmlsec 1.3.17 from source failed")
    assert rest and all(line.startswith("  ") for line in rest)
    assert rest[-1].strip().startswith("hint:")


@pytest.mark.parametrize("output", [
    "",
    "Resolved 12 packages in 3ms\nerror: Distribution `foo==1.0 @ registry+x` can't be "
    "installed because it doesn't have a source distribution or wheel for the current platform\n",
    "error: failed to remove directory `/venvseal-build/out/lib`: Directory not empty\n",
], ids=["empty", "no wheel for the platform", "file system"])
def test_unrecognised_output_gives_none(output: str) -> None:
    assert diagnose(output, lock_file=LOCK, python=PYTHON) is None
