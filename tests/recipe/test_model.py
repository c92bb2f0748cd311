"""Tests for venvseal.recipe: parsing, every kind of bad input, finding, loading, editing."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import pytest

from venvseal.errors import EXIT_USAGE, RecipeError
from venvseal.hashes import parse_sha256
from venvseal.recipe.files import find_recipe, load_recipe, update_deps_hash
from venvseal.recipe.model import (
    DEFAULT_LIBRARY_DIRS,
    DEFAULT_PATH,
    DEFAULT_PYTHON,
    App,
    Assemble,
    CopyRule,
    DebianSpec,
    Deps,
    Fetch,
    Image,
    Recipe,
    Substitute,
    Toolchain,
    Verify,
)
from venvseal.recipe.parse import parse_recipe
from venvseal.recipe.tomlcheck import StrMap

HASH_A = parse_sha256("a" * 64).sri
HASH_B = parse_sha256("b" * 64).sri
REV = "0123456789abcdef0123456789abcdef01234567"
MINIMAL = '[app]\nname = "demo"\nversion = "1.0"\n'

FULL = f"""
[app]
name = "demo"
version = "1.0.0"
project = "app"

[toolchain]
debian = {{ suite = "sid", packages = ["python3.14-dev", "libxml2-dev=2.9"], variant = "buildd" }}
python = "/usr/bin/python3.14"
library-dirs = ["/usr/lib/x86_64-linux-gnu"]
path = ["/usr/bin", "/bin"]

[deps]
hash = "{HASH_A}"
exclude = ["psycopg-binary"]
extras = ["s3"]
env = {{ CFLAGS = "-O2", "LDFLAGS" = "-s" }}

[[fetch]]
name = "authentik-client"
git = "https://example.org/client.git"
rev = "{REV.upper()}"
install = true

[[fetch]]
name = "schema"
url = "https://example.org/schema.tar.gz"
hash = ""

[assemble]
workspace = ["ak-guardian"]
ignore-missing = ["libfoo.so.*"]
links = {{ "manage.py" = "lib/app/manage.py", web = "@site-packages@/web" }}

[[assemble.copy]]
from = "src/app"
to = "@site-packages@/app"
exclude = ["*.pyc"]

[[assemble.copy]]
from = "@schema@/json"
to = "share/schema"

[[substitute]]
file = "@site-packages@/app/settings.py"
replace = "/usr/share/app"
with = "@out@/share/app"
count = 2

[[substitute]]
patch = "patches/fix.diff"
strip = 0

[verify]
imports = ["django", "app.settings"]
import-all = true
import-skip = ["app.tests"]
commands = ["@python@ -c 'import app'", ["@python@", "-m", "app", "--version"]]

[image]
entrypoint = ["@out@/bin/app"]
cmd = ["serve"]
env = {{ TZ = "UTC" }}
user = "1000:1000"
workdir = "/"
ports = ["9000/tcp", 9443, "53/udp", "9000"]
labels = {{ "org.opencontainers.image.title" = "demo @authentik-client@" }}
include = ["/etc/ssl/certs"]
"""


def write(folder: Path, text: str, name: str = "venvseal.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / name
    file.write_text(text, encoding="utf-8")
    return file


def problems_of(tmp_path: Path, text: str, name: str = "venvseal.toml") -> dict[str, str]:
    file = write(tmp_path, text, name)
    with pytest.raises(RecipeError) as info:
        load_recipe(file)
    assert info.value.exit_code == EXIT_USAGE
    return {p.where: p.message for p in info.value.problems}


def test_full_recipe_parses_to_dataclasses(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, FULL))
    base = tmp_path.resolve()
    assert recipe == Recipe(
        file=base / "venvseal.toml",
        base=base,
        key_prefix="",
        app=App(name="demo", version="1.0.0", project=base / "app"),
        toolchain=Toolchain(
            root=None,
            debian=DebianSpec(
                suite="sid",
                packages=("python3.14-dev", "libxml2-dev=2.9"),
                variant="buildd",
            ),
            python=PurePosixPath("/usr/bin/python3.14"),
            library_dirs=(PurePosixPath("/usr/lib/x86_64-linux-gnu"),),
            path=(PurePosixPath("/usr/bin"), PurePosixPath("/bin")),
        ),
        deps=Deps(
            hash=parse_sha256(HASH_A),
            exclude=("psycopg-binary",),
            extras=("s3",),
            env=StrMap({"CFLAGS": "-O2", "LDFLAGS": "-s"}),
        ),
        fetch=(
            Fetch(name="authentik-client", git="https://example.org/client.git", rev=REV,
                  install=True),
            Fetch(name="schema", url="https://example.org/schema.tar.gz"),
        ),
        assemble=Assemble(
            workspace=("ak-guardian",),
            ignore_missing=("libfoo.so.*",),
            links=StrMap({"manage.py": "lib/app/manage.py", "web": "@site-packages@/web"}),
            copy=(
                CopyRule(from_="src/app", to="@site-packages@/app", exclude=("*.pyc",)),
                CopyRule(from_="@schema@/json", to="share/schema"),
            ),
        ),
        substitute=(
            Substitute(kind="text", file="@site-packages@/app/settings.py",
                       replace="/usr/share/app", with_="@out@/share/app", count=2),
            Substitute(kind="patch", patch=base / "patches" / "fix.diff", strip=0),
        ),
        verify=Verify(
            imports=("django", "app.settings"),
            import_all=True,
            import_skip=("app.tests",),
            commands=("@python@ -c 'import app'", ("@python@", "-m", "app", "--version")),
        ),
        image=Image(
            entrypoint=("@out@/bin/app",),
            cmd=("serve",),
            env=StrMap({"TZ": "UTC"}),
            user="1000:1000",
            workdir="/",
            ports=("9000/tcp", "9443/tcp", "53/udp"),
            labels=StrMap({"org.opencontainers.image.title": "demo @authentik-client@"}),
            include=(PurePosixPath("/etc/ssl/certs"),),
        ),
    )
    assert recipe.project == base / "app"
    assert recipe.placeholders == ("out", "python", "site-packages", "authentik-client", "schema")
    hash(recipe)  # frozen all the way down


def test_minimal_recipe_gets_defaults(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, MINIMAL))
    assert recipe.app == App(name="demo", version="1.0", project=tmp_path.resolve())
    assert recipe.toolchain == Toolchain(root=Path("/"), debian=None, python=DEFAULT_PYTHON,
                                         library_dirs=DEFAULT_LIBRARY_DIRS, path=DEFAULT_PATH)
    assert str(recipe.toolchain.python) == "/usr/bin/python3"
    assert [str(p) for p in recipe.toolchain.path] == ["/usr/local/bin", "/usr/bin", "/bin"]
    assert recipe.deps == Deps(hash=None, exclude=(), extras=(), env=StrMap())
    assert recipe.fetch == () and recipe.substitute == ()
    assert recipe.assemble.workspace is None
    assert recipe.assemble == Assemble() and recipe.verify == Verify() and recipe.image == Image()


def test_docs_example_is_a_valid_recipe(tmp_path: Path) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "recipe.md").read_text(encoding="utf-8")
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    recipe = load_recipe(write(tmp_path, example))
    assert recipe.app.name == "demo"
    assert [f.name for f in recipe.fetch] == ["authentik-client", "blueprints"]
    assert len(recipe.substitute) == 2 and recipe.image.ports == ("9000/tcp", "9443/tcp")


def test_toolchain_root_is_resolved_from_the_recipe_folder(tmp_path: Path) -> None:
    text = MINIMAL + '[toolchain]\nroot = "rootfs"\n[deps]\nhash = ""\n'
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.toolchain.root == tmp_path.resolve() / "rootfs"
    assert recipe.deps.hash is None


def test_debian_defaults(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, MINIMAL + '[toolchain.debian]\nsuite = "sid"\n'))
    assert recipe.toolchain.debian == DebianSpec(suite="sid", packages=(), variant="minbase")
    assert recipe.toolchain.root is None


def test_canonical_is_json_with_relative_host_paths(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, FULL))
    data = recipe.canonical()
    json.dumps(data)  # JSON-able
    assert list(data) == ["app", "toolchain", "deps", "fetch", "assemble", "substitute",
                          "verify", "image"]
    assert recipe.canonical("deps") == {"deps": {
        "hash": HASH_A, "exclude": ["psycopg-binary"], "extras": ["s3"],
        "env": {"CFLAGS": "-O2", "LDFLAGS": "-s"},
        "build-requires": [],
    }}
    app = recipe.canonical("app")["app"]
    assert app == {"name": "demo", "version": "1.0.0", "project": "app"}
    substitute = data["substitute"]
    assert isinstance(substitute, list)
    assert substitute[1]["patch"] == "patches/fix.diff"
    assert substitute[0]["with"] == "@out@/share/app"
    assert data["assemble"]["copy"][0]["from"] == "src/app"
    with pytest.raises(ValueError, match="not recipe tables"):
        recipe.canonical("nope")


def test_canonical_does_not_depend_on_the_checkout_folder(tmp_path: Path) -> None:
    one = load_recipe(write(tmp_path / "one", FULL)).canonical()
    two = load_recipe(write(tmp_path / "two", FULL)).canonical()
    assert one == two


def test_canonical_keeps_absolute_paths_outside_the_folder(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, MINIMAL + '[toolchain]\nroot = "/srv/rootfs"\n'))
    assert recipe.canonical("toolchain")["toolchain"]["root"] == "/srv/rootfs"


BAD: list[tuple[str, str, str, str]] = [
    # (id, recipe text, key path, message fragment)
    ("unknown key suggestion", MINIMAL + f'[deps]\nhsh = "{HASH_A}"\n', "deps.hsh",
     "unknown key 'hsh'; did you mean 'hash'?"),
    ("unknown key list", MINIMAL + "[deps]\nzzz = 1\n", "deps.zzz",
     "allowed keys: build-requires, env, exclude, extras, hash"),
    ("unknown top-level table", MINIMAL + "[verfy]\nimports = []\n", "verfy",
     "did you mean 'verify'?"),
    ("snake_case key", MINIMAL + '[toolchain]\nlibrary_dirs = ["/lib"]\n',
     "toolchain.library_dirs", "did you mean 'library-dirs'?"),
    ("missing app", "[deps]\n", "app", 'add [app] with name = "myapp"'),
    ("missing name", '[app]\nversion = "1"\n', "app.name",
     'required key missing; add e.g. name = "myapp"'),
    ("missing version", '[app]\nname = "x"\n', "app.version", "required key missing"),
    ("name wrong type", '[app]\nname = 42\nversion = "1"\n', "app.name",
     "expected a string, got integer 42"),
    ("bad app name", '[app]\nname = "my app"\nversion = "1"\n', "app.name",
     "not usable in a store path"),
    ("dot app name", '[app]\nname = ".hidden"\nversion = "1"\n', "app.name",
     "must not start with '.'"),
    ("long app name", f'[app]\nname = "{"a" * 101}"\nversion = "1"\n', "app.name",
     "at most 100 characters"),
    ("empty version", '[app]\nname = "x"\nversion = ""\n', "app.version", "must not be empty"),
    ("absolute project", MINIMAL.replace("[app]", '[app]\nproject = "/src"'), "app.project",
     "relative to the recipe's folder"),
    ("table wrong type", 'deps = "x"\n' + MINIMAL, "deps", "expected a table, got string 'x'"),
    ("bool is not int", MINIMAL + '[[substitute]]\nfile = "a"\nreplace = "x"\nwith = "y"\n'
     "count = true\n", "substitute[0].count", "expected an integer, got boolean true"),
    ("list item type", MINIMAL + '[deps]\nextras = ["s3", 3]\n', "deps.extras[1]",
     "expected a string, got integer 3"),
    ("deep wrong type", MINIMAL + "[toolchain.debian]\nsuite = 12\n", "toolchain.debian.suite",
     "expected a string"),
    ("root and debian", MINIMAL + '[toolchain]\nroot = "/"\ndebian = { suite = "sid" }\n',
     "toolchain", "has both root and debian"),
    ("bad variant", MINIMAL + '[toolchain]\ndebian = { suite = "sid", variant = "fat" }\n',
     "toolchain.debian.variant", "not one of: minbase, buildd"),
    ("relative python", MINIMAL + '[toolchain]\npython = "bin/python3"\n', "toolchain.python",
     "must be an absolute path"),
    ("colon in path", MINIMAL + '[toolchain]\npath = ["/bin:/usr/bin"]\n', "toolchain.path[0]",
     "must not contain ':'"),
    ("bad deps hash", MINIMAL + '[deps]\nhash = "sha256-nope"\n', "deps.hash",
     "is not a sha256 hash"),
    ("bad fetch hash", MINIMAL + '[[fetch]]\nname = "a"\nurl = "https://h/a"\n[[fetch]]\n'
     'name = "b"\nurl = "https://h/b"\nhash = "md5-x"\n', "fetch[1].hash", "not a sha256 hash"),
    ("bad package name", MINIMAL + '[deps]\nexclude = ["-bad-"]\n', "deps.exclude[0]",
     "not a valid name (PEP 508)"),
    ("reserved env", MINIMAL + '[deps]\nenv = { PATH = "/x" }\n', "deps.env.PATH",
     "PATH cannot be set here: it is built from toolchain.path"),
    ("uv env", MINIMAL + '[deps]\nenv = { UV_INDEX_URL = "x" }\n', "deps.env.UV_INDEX_URL",
     "venvseal sets uv's options itself"),
    ("env value type", MINIMAL + "[deps]\nenv = { CFLAGS = 2 }\n", "deps.env.CFLAGS",
     "expected a string, got integer 2"),
    ("bad env name", MINIMAL + '[deps]\nenv = { "A.B" = "1" }\n', 'deps.env."A.B"',
     "not an environment variable name"),
    ("git without rev", MINIMAL + '[[fetch]]\nname = "c"\ngit = "https://h/r.git"\n',
     "fetch[0].rev", "required with git"),
    ("git and url", MINIMAL + f'[[fetch]]\nname = "c"\ngit = "https://h/r.git"\nrev = "{REV}"\n'
     'url = "https://h/x.tgz"\n', "fetch[0]", "has both git and url"),
    ("neither git nor url", MINIMAL + '[[fetch]]\nname = "c"\n', "fetch[0]", "needs git or url"),
    ("short rev", MINIMAL + '[[fetch]]\nname = "c"\ngit = "https://h/r.git"\nrev = "abc1234"\n',
     "fetch[0].rev", "not a full 40-hex commit id"),
    ("rev with url", MINIMAL + f'[[fetch]]\nname = "c"\nurl = "https://h/x"\nrev = "{REV}"\n',
     "fetch[0].rev", "only for git"),
    ("bad url", MINIMAL + '[[fetch]]\nname = "c"\nurl = "example.org/x.tgz"\n', "fetch[0].url",
     "not a URL"),
    ("duplicate fetch", MINIMAL + '[[fetch]]\nname = "c"\nurl = "https://h/1"\n'
     '[[fetch]]\nname = "c"\nurl = "https://h/2"\n', "fetch[1].name",
     "duplicate fetch name 'c' (also fetch[0].name)"),
    ("fetch name clash", MINIMAL + '[[fetch]]\nname = "out"\nurl = "https://h/1"\n',
     "fetch[0].name", "clashes with the placeholder @out@"),
    ("bad fetch name", MINIMAL + '[[fetch]]\nname = "Client"\nurl = "https://h/1"\n',
     "fetch[0].name", "not a fetch name"),
    ("fetch not a table", "fetch = [1]\n" + MINIMAL, "fetch[0]", "expected a table, got integer 1"),
    ("unknown placeholder", MINIMAL + '[[substitute]]\nfile = "a.py"\nreplace = "x"\n'
     'with = "@foo@/x"\n', "substitute[0].with",
     "unknown placeholder @foo@; known: @out@, @python@, @site-packages@"),
    ("placeholder in command", MINIMAL + '[verify]\ncommands = [["@pyhton@", "-V"]]\n',
     "verify.commands[0]", "unknown placeholder @pyhton@"),
    ("placeholder in image", MINIMAL + '[image]\nentrypoint = ["@outt@/bin/x"]\n',
     "image.entrypoint[0]", "unknown placeholder @outt@"),
    ("empty command", MINIMAL + "[verify]\ncommands = [[]]\n", "verify.commands[0]",
     "non-empty array of strings"),
    ("bad module", MINIMAL + '[verify]\nimports = ["my-mod"]\n', "verify.imports[0]",
     "not a module name"),
    ("copy from absolute", MINIMAL + '[[assemble.copy]]\nfrom = "/etc"\nto = "etc"\n',
     "assemble.copy[0].from", "must be a relative path"),
    ("copy from dotdot", MINIMAL + '[[assemble.copy]]\nfrom = "../x"\nto = "x"\n',
     "assemble.copy[0].from", "must not contain '..'"),
    ("copy from unknown fetch", MINIMAL + '[[assemble.copy]]\nfrom = "@lib@/x"\nto = "x"\n',
     "assemble.copy[0].from", "@lib@ cannot start this path"),
    ("copy to absolute", MINIMAL + '[[assemble.copy]]\nfrom = "a"\nto = "/opt/a"\n',
     "assemble.copy[0].to", "must be a relative path"),
    ("copy to dotdot", MINIMAL + '[[assemble.copy]]\nfrom = "a"\nto = "@site-packages@/../a"\n',
     "assemble.copy[0].to", "must not contain '..'"),
    ("copy to out", MINIMAL + '[[assemble.copy]]\nfrom = "a"\nto = "@out@/a"\n',
     "assemble.copy[0].to", "allowed: @site-packages@"),
    ("copy missing to", MINIMAL + '[[assemble.copy]]\nfrom = "a"\n', "assemble.copy[0].to",
     "required key missing"),
    ("substitute file absolute", MINIMAL + '[[substitute]]\nfile = "/etc/x"\nreplace = "a"\n'
     'with = "b"\n', "substitute[0].file", "must be a relative path"),
    ("substitute file dotdot", MINIMAL + '[[substitute]]\nfile = "a/../../x"\nreplace = "a"\n'
     'with = "b"\n', "substitute[0].file", "must not contain '..'"),
    ("substitute empty replace", MINIMAL + '[[substitute]]\nfile = "a"\nreplace = ""\n'
     'with = "b"\n', "substitute[0].replace", "must not be empty"),
    ("substitute missing with", MINIMAL + '[[substitute]]\nfile = "a"\nreplace = "x"\n',
     "substitute[0].with", "required key missing"),
    ("substitute zero count", MINIMAL + '[[substitute]]\nfile = "a"\nreplace = "x"\n'
     'with = "y"\ncount = 0\n', "substitute[0].count", "positive"),
    ("file and patch", MINIMAL + '[[substitute]]\nfile = "a"\npatch = "p.diff"\n',
     "substitute[0]", "has both file and patch"),
    ("patch with replace", MINIMAL + '[[substitute]]\npatch = "p.diff"\nreplace = "x"\n',
     "substitute[0].replace", "does not go with patch"),
    ("patch absolute", MINIMAL + '[[substitute]]\npatch = "/tmp/p.diff"\n',
     "substitute[0].patch", "must be a relative path"),
    ("patch dotdot", MINIMAL + '[[substitute]]\npatch = "../p.diff"\n', "substitute[0].patch",
     "must not contain '..'"),
    ("negative strip", MINIMAL + '[[substitute]]\npatch = "p.diff"\nstrip = -1\n',
     "substitute[0].strip", "0 or more"),
    ("link name with slash", MINIMAL + '[assemble]\nlinks = { "bin/x" = "lib/x" }\n',
     'assemble.links."bin/x"', "single file name"),
    ("link target dotdot", MINIMAL + '[assemble]\nlinks = { x = "../etc/passwd" }\n',
     "assemble.links.x", "must not contain '..'"),
    ("link target absolute", MINIMAL + '[assemble]\nlinks = { x = "/etc/passwd" }\n',
     "assemble.links.x", "must be a relative path"),
    ("soname with slash", MINIMAL + '[assemble]\nignore-missing = ["/lib/libx.so"]\n',
     "assemble.ignore-missing[0]", "not a soname pattern"),
    ("bad port", MINIMAL + "[image]\nports = [70000]\n", "image.ports[0]", "out of range"),
    ("bad port string", MINIMAL + '[image]\nports = ["80/sctp"]\n', "image.ports[0]",
     'expected a port such as 9000, "9000/tcp" or "53/udp"'),
    ("relative workdir", MINIMAL + '[image]\nworkdir = "app"\n', "image.workdir",
     "must be an absolute path"),
    ("bad user", MINIMAL + '[image]\nuser = "a b"\n', "image.user", "'user:group'"),
    ("relative include", MINIMAL + '[image]\ninclude = ["etc/ssl"]\n', "image.include[0]",
     "must be an absolute path"),
    ("python-path leaves the closure", MINIMAL + '[assemble]\npython-path = ["../src"]\n',
     "assemble.python-path[0]", "must not contain '..'"),
    ("python-path absolute", MINIMAL + '[assemble]\npython-path = ["/srv/app"]\n',
     "assemble.python-path[0]", "must be a relative path"),
    ("run without command", MINIMAL + '[[assemble.run]]\nenv = { A = "1" }\n',
     "assemble.run[0].command", "required; add e.g. command ="),
    ("run command empty", MINIMAL + '[[assemble.run]]\ncommand = []\n',
     "assemble.run[0].command", "expected a shell command string or a non-empty array"),
    ("run unknown placeholder", MINIMAL + '[[assemble.run]]\ncommand = "@outt@/x"\n',
     "assemble.run[0].command", "unknown placeholder @outt@"),
    ("run env owned by the sandbox", MINIMAL + '[[assemble.run]]\ncommand = "true"\n'
     'env = { PATH = "/x" }\n', "assemble.run[0].env.PATH", "cannot be set here"),
    ("run timeout zero", MINIMAL + '[[assemble.run]]\ncommand = "true"\ntimeout = 0\n',
     "assemble.run[0].timeout", "from 1 to 86400"),
    ("run unknown key", MINIMAL + '[[assemble.run]]\ncomand = "true"\n',
     "assemble.run[0].comand", "did you mean 'command'?"),
    ("verify timeout text", MINIMAL + '[verify]\ntimeout = "5m"\n', "verify.timeout",
     "expected an integer"),
    ("verify env name", MINIMAL + '[verify]\nenv = { "1X" = "a" }\n', "verify.env.1X",
     "not an environment variable name"),
    ("verify env placeholder", MINIMAL + '[verify]\nenv = { X = "@nope@" }\n',
     "verify.env.X", "unknown placeholder @nope@"),
    ("relative image path", MINIMAL + '[image]\npath = ["/usr/bin", "bin"]\n', "image.path[1]",
     "must be an absolute folder"),
    ("image path with colon", MINIMAL + '[image]\npath = ["/a:/b"]\n', "image.path[0]",
     "without ':'"),
    ("image path placeholder", MINIMAL + '[image]\npath = ["@nope@/bin"]\n', "image.path[0]",
     "unknown placeholder @nope@"),
    ("image path not strings", MINIMAL + '[image]\npath = "/usr/bin"\n', "image.path",
     "expected"),
]


def test_assemble_run_python_path_and_verify_env_parse(tmp_path: Path) -> None:
    rec = load_recipe(write(tmp_path, MINIMAL + """
[assemble]
python-path = ["src", "@site-packages@/extra"]

[[assemble.run]]
command = "@python@ @out@/manage.py collectstatic --noinput"
env = { DJANGO_SETTINGS_MODULE = "site.settings" }

[[assemble.run]]
command = ["@python@", "-c", "pass"]
timeout = 20

[verify]
env = { DJANGO_SETTINGS_MODULE = "site.settings" }
timeout = 60
"""))
    assert rec.assemble.python_path == ("src", "@site-packages@/extra")
    first, second = rec.assemble.run
    assert first.command == "@python@ @out@/manage.py collectstatic --noinput"
    assert dict(first.env) == {"DJANGO_SETTINGS_MODULE": "site.settings"}
    assert first.timeout == 300
    assert (second.command, second.timeout) == (("@python@", "-c", "pass"), 20)
    assert (dict(rec.verify.env), rec.verify.timeout) == (
        {"DJANGO_SETTINGS_MODULE": "site.settings"}, 60)
    assert rec.canonical("assemble")["assemble"]["run"][1]["timeout"] == 20


@pytest.mark.parametrize(("text", "where", "fragment"), [row[1:] for row in BAD],
                         ids=[row[0] for row in BAD])
def test_bad_recipe(tmp_path: Path, text: str, where: str, fragment: str) -> None:
    problems = problems_of(tmp_path, text)
    assert where in problems, problems
    assert fragment in problems[where]


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ('[app]\nname = "demo"\nversion = 1.0.0\n', 3, 14),
        ('[app]\nname = "x\n', 2, 10),
        ("[app]\n[app]\n", 2, 5),
    ],
)
def test_malformed_toml_names_line_and_column(
    tmp_path: Path, text: str, line: int, column: int
) -> None:
    problems = problems_of(tmp_path, text)
    assert list(problems) == [""]
    assert problems[""].startswith(f"invalid TOML at line {line}, column {column}: ")


def test_toml_error_at_end_of_file(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, '[app]\nname = "x"\nversion = ')
    assert problems[""].startswith("invalid TOML at line 3, column 11 (end of file): ")


def test_not_utf8(tmp_path: Path) -> None:
    file = tmp_path / "venvseal.toml"
    file.write_bytes(b'[app]\nname = "caf\xe9"\n')
    with pytest.raises(RecipeError, match=r"not UTF-8 text \(byte 0xe9 at offset 17\)"):
        load_recipe(file)


def test_huge_file(tmp_path: Path) -> None:
    file = write(tmp_path, MINIMAL + "#" * (1 << 20))
    with pytest.raises(RecipeError, match="larger than 1 MiB"):
        load_recipe(file)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        '[app]\nname = "a b"\n'
        '[deps]\nhsh = ""\nenv = { HOME = "/root" }\n'
        '[[fetch]]\nname = "c"\ngit = "https://h/r.git"\n'
        '[[substitute]]\nfile = "/etc/x"\nreplace = "a"\nwith = "@nope@"\n'
        "[image]\nports = [0]\n"
    )
    problems = problems_of(tmp_path, text)
    assert list(problems) == [
        "app.name", "app.version", "deps.hsh", "deps.env.HOME", "fetch[0].rev",
        "substitute[0].file", "substitute[0].with", "image.ports[0]",
    ]


def test_error_message_names_the_file_and_key(tmp_path: Path) -> None:
    file = write(tmp_path, '[app]\nname = "x"\nversion = 3\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(file)
    assert str(info.value) == f"{file}: app.version: expected a string, got integer 3"


def test_pyproject_prefixes_key_paths(tmp_path: Path) -> None:
    text = '[project]\nname = "demo"\n\n[tool.venvseal.app]\nname = "a b"\nversion = "1"\n' \
           '[tool.venvseal.deps]\nhsh = ""\n[[tool.venvseal.fetch]]\nname = "c"\nurl = "x"\n'
    problems = problems_of(tmp_path, text, "pyproject.toml")
    assert set(problems) == {
        "tool.venvseal.app.name", "tool.venvseal.deps.hsh", "tool.venvseal.fetch[0].url"
    }
    assert problems["tool.venvseal.deps.hsh"] == "unknown key 'hsh'; did you mean 'hash'?"


def test_pyproject_missing_app_names_the_prefixed_table(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, '[tool.venvseal.deps]\nhash = ""\n', "pyproject.toml")
    assert "add [tool.venvseal.app]" in problems["tool.venvseal.app"]


def test_pyproject_recipe_loads(tmp_path: Path) -> None:
    text = '[project]\nname = "demo"\n[tool.venvseal.app]\nname = "demo"\nversion = "2"\n'
    recipe = load_recipe(write(tmp_path, text, "pyproject.toml"))
    assert recipe.key_prefix == "tool.venvseal."
    assert recipe.app.version == "2"


def test_pyproject_without_tool_table(tmp_path: Path) -> None:
    file = write(tmp_path, '[project]\nname = "demo"\n', "pyproject.toml")
    with pytest.raises(RecipeError, match=r"no \[tool.venvseal\] table"):
        load_recipe(file)


def test_parse_recipe_is_pure(tmp_path: Path) -> None:
    data = {"app": {"name": "x", "version": "1"}, "deps": {"env": {"TZ": "UTC"}}}
    with pytest.raises(RecipeError) as info:
        parse_recipe(data, file=tmp_path / "nowhere.toml", key_prefix="tool.venvseal.")
    assert [p.where for p in info.value.problems] == ["tool.venvseal.deps.env.TZ"]


# find_recipe


def test_find_in_folder_with_venvseal_toml(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL)
    write(tmp_path, '[project]\nname = "x"\n', "pyproject.toml")
    assert find_recipe(None, tmp_path) == (tmp_path / "venvseal.toml", "")
    assert find_recipe(tmp_path) == (tmp_path / "venvseal.toml", "")


def test_find_in_folder_with_pyproject_tool_table(tmp_path: Path) -> None:
    write(tmp_path, "[tool.venvseal.app]\n", "pyproject.toml")
    assert find_recipe(Path("."), tmp_path) == (tmp_path / "." / "pyproject.toml",
                                                "tool.venvseal.")


def test_find_relative_path_is_taken_from_cwd(tmp_path: Path) -> None:
    write(tmp_path / "sub", MINIMAL, "other.toml")
    assert find_recipe(Path("sub/other.toml"), tmp_path) == (tmp_path / "sub/other.toml", "")


def test_find_explicit_pyproject(tmp_path: Path) -> None:
    file = write(tmp_path, "[tool.venvseal.app]\n", "pyproject.toml")
    assert find_recipe(file) == (file, "tool.venvseal.")


def test_find_both_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL)
    write(tmp_path, "[tool.venvseal.app]\n", "pyproject.toml")
    with pytest.raises(RecipeError, match="keep one"):
        find_recipe(tmp_path)


def test_find_none_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, '[project]\nname = "x"\n', "pyproject.toml")
    with pytest.raises(RecipeError) as info:
        find_recipe(tmp_path)
    assert f"no venvseal.toml and no [tool.venvseal] in pyproject.toml in {tmp_path}; " \
           "write one (see docs/recipe.md)" in str(info.value)


def test_find_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(RecipeError, match="no such file") as info:
        find_recipe(missing)
    assert info.value.file == str(missing)


def test_find_rejects_non_toml_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"a recipe is a \.toml file"):
        find_recipe(write(tmp_path, MINIMAL, "recipe.txt"))


def test_load_from_folder(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL)
    assert load_recipe(tmp_path).app.name == "demo"


# update_deps_hash


@pytest.mark.parametrize(
    ("name", "prefix", "text"),
    [
        ("venvseal.toml", "", '# the demo recipe\n[app]\nname = "demo"  # store name\n'
         'version = "1.0"\n\n[deps]\nhash = ""  # filled in by venvseal\nextras = ["s3"]\n'),
        ("venvseal.toml", "", '# the demo recipe\n[app]\nname = "demo"  # store name\n'
         'version = "1.0"\n'),
        ("pyproject.toml", "tool.venvseal.", '[project]\nname = "demo"\n\n'
         '# the demo recipe\n[tool.venvseal.app]\nname = "demo"  # store name\n'
         'version = "1.0"\n\n[tool.ruff]\nline-length = 100\n'),
        ("pyproject.toml", "tool.venvseal.", '[project]\nname = "demo"\n\n'
         '# the demo recipe\n[tool.venvseal.app]\nname = "demo"  # store name\n'
         f'version = "1.0"\n[tool.venvseal.deps]\nhash = "{HASH_A}"\n'),
    ],
    ids=["venvseal-with-deps", "venvseal-without-deps", "pyproject-without-deps",
         "pyproject-with-deps"],
)
def test_update_deps_hash_keeps_comments(
    tmp_path: Path, name: str, prefix: str, text: str
) -> None:
    file = write(tmp_path, text, name)
    file.chmod(0o640)
    update_deps_hash(file, prefix, HASH_B)
    new = file.read_text(encoding="utf-8")
    assert "# the demo recipe\n" in new
    assert 'name = "demo"  # store name\n' in new
    assert new.count("hash =") == 1
    recipe = load_recipe(file)
    assert recipe.deps.hash == parse_sha256(HASH_B)
    assert recipe.key_prefix == prefix
    assert file.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left


def test_update_deps_hash_keeps_inline_comment_and_other_keys(tmp_path: Path) -> None:
    text = MINIMAL + '[deps]\nhash = ""  # filled in by venvseal\nextras = ["s3"]\n'
    file = write(tmp_path, text)
    update_deps_hash(file, "", HASH_B)
    new = file.read_text(encoding="utf-8")
    assert f'hash = "{HASH_B}"  # filled in by venvseal\n' in new
    assert load_recipe(file).deps.extras == ("s3",)


def test_update_deps_hash_writes_sri_and_can_clear(tmp_path: Path) -> None:
    file = write(tmp_path, MINIMAL)
    update_deps_hash(file, "", parse_sha256(HASH_A).nix32)
    assert f'hash = "{HASH_A}"' in file.read_text(encoding="utf-8")
    update_deps_hash(file, "", "")
    assert load_recipe(file).deps.hash is None


def test_update_deps_hash_rejects_a_non_table_deps(tmp_path: Path) -> None:
    file = write(tmp_path, MINIMAL.replace("[app]", 'deps = "x"\n[app]'))
    with pytest.raises(RecipeError, match="expected a table"):
        update_deps_hash(file, "", HASH_A)
    assert file.read_text(encoding="utf-8").startswith('deps = "x"')


def test_pyproject_tool_venvseal_must_be_a_table(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, '[tool]\nvenvseal = "yes"\n', "pyproject.toml")
    assert problems == {"tool.venvseal": "expected a table, got string 'yes'"}


def test_strmap_is_an_immutable_sorted_mapping() -> None:
    env = StrMap({"b": "2", "a": "1"})
    assert list(env) == ["a", "b"] and env["b"] == "2" and dict(env) == {"a": "1", "b": "2"}
    assert env == StrMap([("a", "1"), ("b", "2")]) and hash(env) == hash(StrMap(env))
    with pytest.raises(KeyError):
        env["c"]
