"""The flagship, end to end: authentik's 173-package dependency set on Python 3.14 from a
Debian sid root file system, with the stand-in app of examples/authentik.

Slow (a few minutes). The sid root file system and uv's downloads are cached between runs
in $VENVSEAL_TEST_CACHE (default /var/cache/venvseal-tests): the root is a store path keyed
by its package list and is copied into each run's fresh store, re-hashed; the uv cache never
changes the output (`venvseal check` below proves that with a cold cache).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest
from support import Run, venvseal, venvseal_process
from support.demo import elf_files
from support.postgres import postgres_server
from support.rootfs import unpack

from venvseal.assemble.importable import top_level_modules
from venvseal.elf.buildid import find_elf_files
from venvseal.elf.loadercheck import loader_check
from venvseal.recipe.files import load_recipe
from venvseal.store.core import STORE_DIR, Store, StorePath, copy_path
from venvseal.toolchain.sandbox import Mount, Sandbox, SandboxSpec, fixed_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO.parent / "shared" / "fixtures" / "authentik-deps"
MEMBERS = ("ak-guardian", "django-channels-postgres", "django-dramatiq-postgres",
           "django-postgres-cache")
SITE = "lib/python3.14/site-packages"


def cache_root() -> Path:
    return Path(os.environ.get("VENVSEAL_TEST_CACHE", "/var/cache/venvseal-tests"))


def ok(run: Run) -> Run:
    assert run.code == 0, run.err[-3000:]
    return run


class Built:
    """The example, prepared, locked and built once for the whole module."""

    def __init__(self, work: Path) -> None:
        self.project = work / "authentik"
        self.store_root = work / "store"
        self.uv_cache = cache_root() / "uv"
        assert (FIXTURE / "pyproject.toml").is_file(), (
            f"no authentik-deps fixture at {FIXTURE}: the shared test data must sit beside "
            "the repository's folder (../shared), as in CI")
        subprocess.run([str(REPO / "examples" / "authentik" / "prepare"), str(self.project),
                        str(FIXTURE)], check=True)
        self._seed_toolchain()
        ok(venvseal("--store", self.store_root, "lock", self.project, "--uv-cache",
                    self.uv_cache))
        self.result = ok(venvseal("--store", self.store_root, "--json", "build", self.project,
                                  "--update-hash", "--uv-cache", self.uv_cache, "--out-link",
                                  work / "result")).json()
        self.path = Path(self.result["path"])
        self.recipe = load_recipe(self.project)

    def _seed_toolchain(self) -> None:
        cached = cache_root() / "store"
        run = ok(venvseal("--store", cached, "--json", "toolchain", self.project))
        with Store(cached) as source, Store(self.store_root) as store:
            copy_path(store, source, StorePath(Path(run.json()["root"])))

    def run(self, *command: str, env: tuple[str, ...] = ()) -> Run:
        opts = [a for kv in env for a in ("--env", kv)]
        return venvseal_process("--store", self.store_root, "run", self.project,
                                "--uv-cache", self.uv_cache, *opts, "--", *command)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    yield Built(tmp_path_factory.mktemp("authentik"))


def test_the_build_verified_every_module_and_elf_file(built: Built) -> None:
    site = built.path / SITE
    modules = top_level_modules(site)
    assert len(modules) > 150
    verified = built.result["verified"]
    assert verified["imports"] == len(modules) + 1  # plus authentik.root.settings
    # The ELF files are in the relinked deps (checked with the loader when it was made);
    # the closure has none of its own, and links to them.
    assert verified["elf_files"] == len(find_elf_files(built.path)) == 0
    assert len(find_elf_files(Path(built.result["relinked"]))) >= 60


def test_every_elf_file_resolves_with_sids_dynamic_loader(built: Built) -> None:
    with Store(built.store_root) as store:
        toolchain = next(p for p in store.paths() if p.name.endswith("-debian-sid-minbase-root"))
    # Through the closure's links, as Python opens them ($ORIGIN is the folder a library is
    # opened through).
    logical = STORE_DIR / built.path.name
    files = [logical / p.relative_to(built.path).as_posix() for p in elf_files(built.path)]
    relinked = Path(built.result["relinked"])
    spec = SandboxSpec(root=toolchain, env=fixed_env((PurePosixPath("/usr/bin"),)),
                       mounts=(Mount(host=built.path, target=logical),
                               Mount(host=relinked, target=STORE_DIR / relinked.name)))
    unresolved = loader_check(files, runner=Sandbox.locate(), spec=spec)
    assert len(unresolved) == len(files) >= 60
    assert {f: libs for f, libs in unresolved.items() if libs} == {}


def test_c_extensions_were_compiled_from_source_against_system_libraries(built: Built) -> None:
    site = built.path / SITE
    for dist in ("lxml", "xmlsec", "psycopg_c", "gssapi"):
        wheel = next(site.glob(f"{dist}-*.dist-info")) / "WHEEL"
        tags = re.findall(r"^Tag: (.+)$", wheel.read_text(), re.M)
        assert tags and all(t.endswith("linux_x86_64") and "manylinux" not in t
                            for t in tags), (dist, tags)
    assert not list(site.glob("lxml*.libs")), "lxml must use sid's libxml2, not bundled copies"
    # Built against the libxml2 it runs with: sid's, not a copy bundled in a wheel.
    run = ok(built.run("@python@", "-c", "import psycopg, lxml.etree as e, xmlsec, gssapi; "
                       "print(psycopg.pq.__impl__, e.LIBXML_VERSION == e.LIBXML_COMPILED_VERSION)"))
    assert run.out.split() == ["c", "True"]


def test_workspace_members_are_installed_distributions(built: Built) -> None:
    code = ("import importlib.metadata as m, sys; "
            "print(' '.join(m.version(n) for n in sys.argv[1:]))")
    run = ok(built.run("@python@", "-c", code, *MEMBERS))
    assert len(run.out.split()) == len(MEMBERS)
    for member in MEMBERS:
        name = member.replace("-", "_")
        assert list((built.path / SITE).glob(f"{name}-*.dist-info/RECORD"))


def test_the_stand_in_is_patched_as_the_real_build_is(built: Built) -> None:
    logical = f"{STORE_DIR}/{built.path.name}"
    site = built.path / SITE / "authentik"
    assert f'BASE_DIR = Path("{logical}")' in (site / "root" / "settings.py").read_text()
    assert f"blueprints_dir: {logical}/blueprints" in (site / "lib" / "default.yml").read_text()
    ak = (built.path / "lifecycle" / "ak").read_text()
    assert ak.startswith("#!/usr/bin/bash\n")
    for name in ("manage.py", "blueprints", "lifecycle"):
        assert (built.path / name).exists(), name
    assert (built.path / "blueprints" / "default" / "default-brand.yaml").is_file()
    assert ok(built.run("@out@/lifecycle/ak", "version")).out.strip() == "2026.5.0"


def test_django_setup_and_migrate_against_postgresql(built: Built) -> None:
    with postgres_server() as pg:
        env = (f"AUTHENTIK_POSTGRESQL__HOST={pg.host}", f"AUTHENTIK_POSTGRESQL__PORT={pg.port}",
               "AUTHENTIK_POSTGRESQL__USER=postgres", "AUTHENTIK_POSTGRESQL__NAME=postgres")
        run = ok(built.run("@out@/lifecycle/ak", "migrate", env=env))
        applied = re.findall(r"Applying (\w+)\.0001_initial\.\.\. OK", run.out)
        assert applied.index("authentik_flows") < applied.index("authentik_core")
        check = ok(built.run("@python@", "@out@/manage.py", "showmigrations", "authentik_core",
                             env=env))
        assert "[X] 0001_initial" in check.out


def test_the_file_two_wheels_ship_differently_is_removed(built: Built) -> None:
    # pyrad and django-tenants both ship a different docs/Makefile: whichever uv installs
    # last would win, so the deps stage removes it (and says so) to stay reproducible.
    assert not (built.path / SITE / "docs" / "Makefile").exists()
    assert (built.path / SITE / "docs" / "conf.py").exists()  # only pyrad ships this one


def test_check_rebuilds_the_deps_cold_and_gets_the_same_hash(built: Built) -> None:
    run = ok(venvseal("--store", built.store_root, "--json", "check", built.project,
                      "--uv-cache", built.uv_cache))
    doc = run.json()
    assert doc["reproducible"] is True and doc["first"] == doc["second"]
    assert doc["first"] == str(built.recipe.deps.hash)


def test_the_closure_verifies_in_the_store(built: Built) -> None:
    run = ok(venvseal("--store", built.store_root, "--json", "verify", built.path))
    assert run.json()["checked"] == 1 and run.json()["changed"] == []


IMAGE_CHECK = r'''
import gssapi, kadmin, xmlsec, lxml.etree as etree
from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric import rsa
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
private = key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())
public = key.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo)
doc = etree.fromstring(b"<Response><Assertion>x</Assertion></Response>")
sig = xmlsec.template.create(doc, xmlsec.Transform.EXCL_C14N, xmlsec.Transform.RSA_SHA256)
doc.append(sig)
ref = xmlsec.template.add_reference(sig, xmlsec.Transform.SHA256)
xmlsec.template.add_transform(ref, xmlsec.Transform.ENVELOPED)
signer = xmlsec.SignatureContext()
signer.key = xmlsec.Key.from_memory(private, xmlsec.KeyFormat.PEM)
signer.sign(sig)
verifier = xmlsec.SignatureContext()
verifier.key = xmlsec.Key.from_memory(public, xmlsec.KeyFormat.PEM)
verifier.verify(sig)
print("xmlsec verified")
print("mechs", *sorted(str(m) for m in gssapi.mechs.Mechanism.all_mechs()))
try:  # the kadm5 client library is dlopened first; no krb5.conf then stops it
    kadmin.KAdmin.with_password(kadmin.KAdm5Variant.MitClient, "a/admin@EXAMPLE.ORG", "x")
except Exception as err:
    print("kadmin", type(err).__name__)
'''


def test_the_image_signs_saml_lists_krb5_and_loads_kadm5(built: Built, tmp_path: Path) -> None:
    archive = tmp_path / "authentik.tar"
    ok(venvseal("--store", built.store_root, "--json", "image", built.project, "--uv-cache",
                built.uv_cache, "-o", archive))
    image = unpack(archive)
    try:
        done = image.run([f"{STORE_DIR}/{built.path.name}/bin/python", "-c", IMAGE_CHECK])
    finally:
        shutil.rmtree(image.root)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "xmlsec verified"
    assert "krb5" in lines[1].split()
    # LibraryLoadError when the image lacks libkadm5clnt_mit.so (before issue 14).
    assert lines[2] == "kadmin KerberosException", done.stdout
