"""``[verify] import-all``: which top-level modules the installed distributions provide (fast).

The checks themselves run in the sandbox against a real closure (test_build_e2e.py and
test_assemble.py).
"""

from __future__ import annotations

from pathlib import Path

from support import write

from venvseal.assemble.verify import top_level_modules

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
        "namespace/module.py",  # a namespace package has no __init__.py
        "deep/pkg/__init__.py",  # not top level
        "odd.pth",
        "README.txt",
        "",  # a blank line between rows
    ],
    "self_test-1.0.dist-info": ["self_test.py", "conftest.py"],
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
        "_cffi_backend", "cffi", "conftest", "django", "self_test", "six", "typed"]


def test_top_level_modules_skip_list(tmp_path: Path) -> None:
    assert top_level_modules(site(tmp_path), ["conftest", "self_test", "django.db"]) == [
        "_cffi_backend", "cffi", "django", "six", "typed"]


def test_top_level_modules_of_an_empty_site_packages(tmp_path: Path) -> None:
    assert top_level_modules(tmp_path) == []
