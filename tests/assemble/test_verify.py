"""``[verify] import-all``: which modules the installed distributions provide, and how a
failed import is reported (fast).

The checks themselves run in the sandbox against a real closure (test_build_e2e.py and
test_assemble.py).
"""

from __future__ import annotations

from pathlib import Path

from support import write

from venvseal.assemble.importable import find_importable, top_level_modules
from venvseal.assemble.verify import END, FAILED, parse_failures

RECORDS = {
    "six-1.16.0.dist-info": ["six.py", "six-1.16.0.dist-info/METADATA",
                             "six-1.16.0.dist-info/RECORD"],
    "django-5.2.8.dist-info": ["django/__init__.py", "django/db/__init__.py",
                               "django/contrib/admin/__init__.py", "../../../bin/django-admin",
                               "django-5.2.8.dist-info/RECORD"],
    "cffi-1.17.1.dist-info": ["_cffi_backend.cpython-311-x86_64-linux-gnu.so",
                              "cffi/__init__.py", "cffi-1.17.1.dist-info/RECORD"],
    "types_six-1.0.dist-info": ["six-stubs/__init__.pyi", "six-stubs/moves.pyi"],
    "typed-1.0.dist-info": ["typed/__init__.pyi", "typed/py.typed"],
    "odd-1.0.dist-info": [
        "odd-name.py",  # not an identifier: cannot be imported
        "__pycache__/odd.cpython-311.pyc",
        "namespace/module.py",  # a folder without __init__.py, odd's alone
        "examples/demo/__init__.py",  # no namespace: shipped by odd alone, not named so
        "odd.libs/libodd-1a2b.so.1",  # a shared library, not a module
        "odd.pth",
        "README.txt",
        "",  # a blank line between rows
    ],
    "self_test-1.0.dist-info": ["self_test.py", "conftest.py"],
    "deep_ns-1.0.dist-info": ["deep/pkg/__init__.py"],  # a namespace named as its dist
    # Two distributions share the namespace "google", neither has google/__init__.py.
    "protobuf-6.0.dist-info": ["google/protobuf/__init__.py", "google/protobuf/message.py",
                               "google/_upb/_message.abi3.so"],
    "googleapis_common_protos-1.0.dist-info": ["google/api/__init__.py",
                                               "google/api/http_pb2.py"],
}


def site(tmp_path: Path) -> Path:
    root = tmp_path / "lib" / "python3.11" / "site-packages"
    for dist_info, rows in RECORDS.items():
        write(root / dist_info / "RECORD",
              "".join(f"{r},sha256=x,1\n" if r else "\n" for r in rows))
    write(root / "orphan.py", "")  # not listed in any RECORD: not a distribution's
    write(root / "norecord-1.0.dist-info" / "METADATA", "Name: norecord\n")
    return root


def test_top_level_modules_from_records(tmp_path: Path) -> None:
    assert top_level_modules(site(tmp_path)) == [
        "_cffi_backend", "cffi", "conftest", "deep.pkg", "django", "google.api",
        "google.protobuf", "self_test", "six", "typed"]


def test_what_import_all_skips_is_listed_with_why(tmp_path: Path) -> None:
    found = find_importable(site(tmp_path), ["conftest", "self_test", "django.db"])
    assert found.modules == ("_cffi_backend", "cffi", "deep.pkg", "django", "google.api",
                             "google.protobuf", "six", "typed")
    assert dict(found.skipped) == {
        "conftest": "in [verify] import-skip",
        "self_test": "in [verify] import-skip",
        "odd-name": "not an importable name",
        "namespace": "a folder without __init__.py that only odd ships, not named after it "
                     "(examples or tests, most likely); name its modules in [verify] imports "
                     "to import them",
        "google._upb": "a namespace folder with modules but no package; name its modules "
                       "in [verify] imports",
        "examples": "a folder without __init__.py that only odd ships, not named after it "
                    "(examples or tests, most likely); name its modules in [verify] imports to "
                    "import them",
    }


def test_top_level_modules_of_an_empty_site_packages(tmp_path: Path) -> None:
    assert top_level_modules(tmp_path) == []


def test_a_failed_import_keeps_its_traceback_lines() -> None:
    output = (f"noise\n\n{FAILED} app.boom\nTraceback (most recent call last):\n"
              '  File "/x/app/boom.py", line 1, in <module>\n'
              f"    raise RuntimeError('kaboom')\nRuntimeError: kaboom\n{END}\n"
              f"\n{FAILED} other\nModuleNotFoundError: No module named 'other'\n{END}\n")
    assert parse_failures(output) == [
        ("app.boom", ["Traceback (most recent call last):",
                      '  File "/x/app/boom.py", line 1, in <module>',
                      "    raise RuntimeError('kaboom')", "RuntimeError: kaboom"]),
        ("other", ["ModuleNotFoundError: No module named 'other'"])]
