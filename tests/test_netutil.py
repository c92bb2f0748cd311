"""netutil: URL credentials redacted in every output (show, --json, errors, -v logs), proxies.

The fetch tests (tests/fetch/test_realise.py) check git's and the HTTP client's own texts;
here every way a text leaves the CLI is checked with one table of recipes holding secrets.
"""

from __future__ import annotations

import io
import logging
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from support import venvseal, write

from venvseal import process
from venvseal.cli.main import _configure_logging
from venvseal.cli.ui import Ui
from venvseal.errors import CommandError
from venvseal.netutil import bypass_proxy, proxies, redact_url, scrub, scrubber

SECRET = "s3cr3tTOKEN"


# The helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "shown"), [
    (f"cannot fetch https://user:{SECRET}@host/r.git (exit 128)",
     "cannot fetch https://user:***@host/r.git (exit 128)"),
    (f"'https://{SECRET}@host/r.git' is bad", "'https://***@host/r.git' is bad"),
    (f'"url": "https://h/x.tar.gz?access_token={SECRET}&v=1"',
     '"url": "https://h/x.tar.gz?access_token=***&v=1"'),
    (f"two: http://a:{SECRET}@h1/ and git+https://{SECRET}@h2/x",
     "two: http://a:***@h1/ and git+https://***@h2/x"),
    ("no secret in https://host/x?v=1 or ssh://git@host/r", None),
    ("plain text, no URL", None),
    ("write oci://HOST[:PORT]/REPO, e.g. oci://127.0.0.1:5000/c", None),  # cannot be parsed
    (f"bad oci://u:{SECRET}@[x/REPO", "bad oci://***@[x/REPO"),
])
def test_scrub_redacts_every_url_in_a_text(text: str, shown: str | None) -> None:
    assert scrub(text) == (text if shown is None else shown)
    assert scrub(scrub(text)) == scrub(text)  # idempotent: safe to apply at every layer


def test_scrubber_also_removes_the_secret_alone_and_decoded() -> None:
    url = "https://user:p%40ss" + SECRET + "@host/r.git"
    clean = scrubber(url)
    text = f"git said: auth failed for p@ss{SECRET} at {url}"
    assert SECRET not in clean(text)
    assert "https://user:***@host/r.git" in clean(text)


def test_redact_url_leaves_urls_without_secrets_untouched() -> None:
    for url in ("https://host/a%20b?x=1", "ssh://git@host/r.git", "file:///srv/x.tar"):
        assert redact_url(url) == url


@pytest.mark.parametrize(("env", "host", "expected"), [
    ({"https_proxy": "http://p:3128"}, "h.example:443", {"https": "http://p:3128"}),
    ({"HTTP_PROXY": "http://p:1"}, "h.example", {"http": "http://p:1"}),
    ({"https_proxy": "http://p:1", "no_proxy": ".example"}, "h.example:443", {}),
    ({"https_proxy": "http://p:1", "NO_PROXY": "*"}, "anything", {}),
    ({"https_proxy": "http://p:1", "no_proxy": "other.org"}, "H.EXAMPLE",
     {"https": "http://p:1"}),
    ({}, "h.example", {}),
])
def test_proxies_come_only_from_the_given_env(env: dict[str, str], host: str,
                                              expected: dict[str, str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://from-os-environ:9")
    assert proxies(env, host) == expected


def test_bypass_proxy_matches_domains_not_substrings() -> None:
    assert bypass_proxy("a.example.org", "example.org")
    assert not bypass_proxy("badexample.org", "example.org")


def test_process_run_redacts_urls_in_its_log_and_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="venvseal")
    url = f"https://user:{SECRET}@host/r.git"
    with pytest.raises(CommandError) as err:
        process.run(["sh", "-c", 'echo "fetching $0"; exit 3', url], what="a step")
    assert SECRET not in str(err.value) and SECRET not in caplog.text
    assert "fetching https://user:***@host/r.git" in str(err.value)
    assert "https://user:***@host/r.git" in caplog.text  # the command line, logged


# Every output of the CLI -------------------------------------------------------------------

RECIPE = """\
[app]
name = "app"
version = "1"

[toolchain]
root = "/"
python = "/usr/bin/python3.11"

{fetch}
"""
GIT = f'git = "https://user:{SECRET}@host/r.git"\nrev = "{"a" * 40}"'
TOKEN_USER = f'git = "https://{SECRET}@host/r.git"\nrev = "{"a" * 40}"'
URL = f'url = "https://host/x.tar.gz?access_token={SECRET}"'


def fetch_block(body: str, name: str = "lib") -> str:
    return f'[[fetch]]\nname = "{name}"\n{body}\n'


# (id, the [[fetch]] tables, argv before the recipe, exit code, what must be shown instead)
CASES = [
    ("show --json of a git URL with user:password", fetch_block(GIT), ["--json", "show"], 0,
     "https://user:***@host/r.git"),
    ("show --json of a git URL with a token as user", fetch_block(TOKEN_USER),
     ["--json", "show"], 0, "https://***@host/r.git"),
    ("show --json of a URL with a token parameter", fetch_block(URL), ["--json", "show"], 0,
     "x.tar.gz?access_token=***"),
    ("show of the same", fetch_block(GIT), ["show"], 0, ": ok (app 1)"),
    ("recipe error quoting a bad URL", fetch_block(URL[:-1] + ' oops"'), ["show"], 2,
     "fetch[0].url: 'https://host/x.tar.gz?access_token=***' is not a URL"),
    ("recipe error quoting it, --json", fetch_block(URL[:-1] + ' oops"'), ["--json", "show"], 2,
     "access_token=***"),
    ("recipe error quoting a URL as a name", fetch_block(GIT, name=f"https://u:{SECRET}@h"),
     ["show"], 2, "fetch[0].name: 'https://u:***@h' is not a fetch name"),
    ("recipe error describing a wrong value",
     fetch_block(GIT) + f'\n[deps]\nhash = "https://u:{SECRET}@host/some/long/path"\n',
     ["-v", "show"], 2, "deps.hash"),
]


@pytest.mark.parametrize(("recipe", "argv", "code", "shown"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_no_output_of_the_cli_shows_a_url_secret(tmp_path: Path, recipe: str, argv: list[str],
                                                 code: int, shown: str) -> None:
    write(tmp_path / "pyproject.toml", '[project]\nname = "app"\nversion = "1"\n')
    write(tmp_path / "venvseal.toml", RECIPE.format(fetch=recipe))
    assert SECRET in (tmp_path / "venvseal.toml").read_text()
    run = venvseal(*argv, tmp_path)
    assert run.code == code, run.err
    assert SECRET not in run.out and SECRET not in run.err
    assert shown in run.out + run.err


def test_ui_and_verbose_logs_scrub_every_line() -> None:
    url = f"https://user:{SECRET}@host/r.git"
    out, err = io.StringIO(), io.StringIO()
    logger = logging.getLogger("venvseal")
    handlers, level = logger.handlers[:], logger.level
    try:
        with redirect_stdout(out), redirect_stderr(err):
            _configure_logging(True)
            logging.getLogger("venvseal.test").debug("fetching %s", url)
            human, machine = Ui(json_mode=False, env={}), Ui(json_mode=True, env={})
            human.result({"git": url}, f"git: {url}")
            human.info(f"note: {url}")
            human.fail(None, f"failed: {url}\nsecond line {url}", 1)
            machine.result({"git": url, "nested": [{"u": url}]})
            machine.fail(None, f"failed: {url}", 1)
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
    text = out.getvalue() + err.getvalue()
    assert SECRET not in text
    # 10: the JSON error shows the message as "error" and in its "problems" list
    assert text.count("https://user:***@host/r.git") == 10, text
