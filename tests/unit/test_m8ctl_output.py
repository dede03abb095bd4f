"""What m8ctl prints for people and for scripts: tables, TSV and JSON; its arguments;
its shell completion; the stages of a wait. The API is a stand-in (httpx's MockTransport)
behind the real SDK."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from m8.client import m8ctl
from m8.client.output import Field, OutputFormat, choose, tsv_cell, tsv_rows
from m8.client.profile import Profile
from m8.client.progress import stages, upload_stage
from m8.client.sdk import M8Client

LONG_PATH = "team-a/" + "/".join(f"segment-{n}" for n in range(12)) + "/password"
FINGERPRINT = "fp1:" + "ab" * 21
SECRET = {
    "store": "vault-a",
    "path": LONG_PATH,
    "fingerprint": FINGERPRINT,
    "upstream_version": "3",
    "stored_at": "2026-11-30T12:00:00Z",
    "stored_by": "alice",
    "updated_at": "2026-11-30T12:00:01Z",
}
HISTORY = {
    "store": "vault-a",
    "path": LONG_PATH,
    "history": [
        {
            "upload_id": "0b0e8f1c-4d2a-4c1e-9f1a-3a5b6c7d8e9f",
            "status": "stored",
            "fingerprint": FINGERPRINT,
            "upstream_version": "3",
            "requested_by": "alice",
            "requested_at": "2026-11-30T11:59:59Z",
            "completed_at": "2026-11-30T12:00:00Z",
        }
    ],
}
ME = {"subject": "alice", "roles": ["user"], "stores": ["aws-b", "vault-a"], "prefixes": ["*"]}
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Profile:
    monkeypatch.setenv("M8CTL_CONFIG", str(tmp_path / "m8ctl.json"))
    made = Profile("http://m8", "tok", store="vault-a")
    made.save()
    return made


class StandIn:
    """The API's answers by path; records what was asked."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        real = M8Client

        def client(server: str, token: str, **options: Any) -> M8Client:
            return real(server, token, transport=httpx.MockTransport(self.handle), **options)

        monkeypatch.setattr("m8.client.sdk.M8Client", client)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode().partition("?")[0]
        self.asked.append(path)
        if path not in self.answers:
            problem = {"type": "urn:m8:problem:not_found", "title": "Not Found", "status": 404}
            return httpx.Response(404, json=problem)
        return httpx.Response(200, json=self.answers[path])


def run(*args: str, columns: int = 40) -> Any:
    # A narrow terminal's width, as rich would see it: tables cut, TSV and wide never.
    return CliRunner().invoke(m8ctl.app, list(args), env={"COLUMNS": str(columns)})


# --- formats ------------------------------------------------------------------------------


def test_a_piped_secret_list_prints_whole_paths_as_tab_separated_lines(
    profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    StandIn(monkeypatch, {"/v1/secrets": {"secrets": [SECRET], "next_after": None}})
    done = run("secret", "list")  # CliRunner's stdout is no terminal: a pipe's default
    assert done.exit_code == 0, done.output
    header, row = done.stdout.splitlines()
    assert header.split("\t") == [
        "store",
        "path",
        "fingerprint",
        "upstream_version",
        "stored_at",
        "stored_by",
        "updated_at",
    ]
    assert row.split("\t") == [SECRET[name] for name in header.split("\t")]
    assert "…" not in done.stdout


def test_json_output_is_the_apis_object_whole(
    profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    StandIn(monkeypatch, {"/v1/secrets": {"secrets": [SECRET], "next_after": None}})
    for args in (["-o", "json"], ["--json"], ["-o", "JSON"]):
        done = run("secret", "list", *args)
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout) == {"secrets": [SECRET]}


def test_a_table_fits_the_terminal_and_wide_cuts_nothing(
    profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    StandIn(monkeypatch, {"/v1/secrets": {"secrets": [SECRET], "next_after": None}})
    table = run("secret", "list", "-o", "table", columns=100)
    wide = run("secret", "list", "-o", "wide", columns=100)
    assert table.exit_code == wide.exit_code == 0, table.output + wide.output
    assert LONG_PATH not in table.stdout.replace("\n", "")  # cut to fit 100 columns
    assert FINGERPRINT in table.stdout  # fingerprints are never cut
    assert "updated" not in table.stdout  # a wide column
    assert LONG_PATH in wide.stdout
    assert FINGERPRINT in wide.stdout
    assert "updated" in wide.stdout


def test_tsv_escapes_tabs_and_newlines_so_every_line_has_the_same_cells() -> None:
    fields = (Field("a"), Field("b"), Field("c"), Field("d"))
    text = tsv_rows(fields, [{"a": "x\ty", "b": "two\nlines\\", "c": None, "d": ["p", "q"]}])
    _, row = text.splitlines()
    assert row.split("\t") == ["x\\ty", "two\\nlines\\\\", "", "p,q"]
    assert tsv_cell(True) == "true"


def test_the_default_format_is_a_table_on_a_terminal_and_tsv_elsewhere() -> None:
    assert choose(None, False, terminal=True) is OutputFormat.TABLE
    assert choose(None, False, terminal=False) is OutputFormat.TSV
    assert choose(OutputFormat.WIDE, False, terminal=False) is OutputFormat.WIDE
    assert choose(None, True, terminal=True) is OutputFormat.JSON


def test_json_and_another_format_at_once_is_a_usage_error(profile: Profile) -> None:
    done = run("secret", "list", "--json", "-o", "tsv")
    assert done.exit_code == 2
    assert "two formats" in " ".join(done.stderr.split())


def test_a_stores_list_in_tsv_has_every_column(
    profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = {"name": "vault-a", "type": "vault", "active": True, "default": True}
    listed = {"stores": [{**store, "config": {"mount": "secret"}}], "default": "vault-a"}
    StandIn(monkeypatch, {"/v1/stores": listed})
    done = run("stores", "list")
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines() == [
        "name\ttype\tactive\tdefault\tconfig",
        "vault-a\tvault\ttrue\ttrue\tmount=secret",
    ]


# --- secret show and history: PATH [--store S] ---------------------------------------------


def test_secret_show_takes_a_path_in_the_profiles_store(
    profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = StandIn(monkeypatch, {f"/v1/secrets/vault-a/{LONG_PATH}": SECRET})
    done = run("secret", "show", LONG_PATH)
    assert done.exit_code == 0, done.output
    assert api.asked == [f"/v1/secrets/vault-a/{LONG_PATH}"]
    lines = dict(line.split("\t") for line in done.stdout.splitlines())
    assert lines["path"] == LONG_PATH
    assert lines["fingerprint"] == FINGERPRINT


def test_secret_history_takes_a_path_and_a_store_option(
    profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = StandIn(monkeypatch, {f"/v1/history/aws-b/{LONG_PATH}": HISTORY})
    done = run("secret", "history", LONG_PATH, "--store", "aws-b", "-o", "json")
    assert done.exit_code == 0, done.output
    assert api.asked == [f"/v1/history/aws-b/{LONG_PATH}"]
    assert json.loads(done.stdout) == HISTORY


@pytest.mark.parametrize("command", ["show", "history"])
def test_the_old_store_path_form_says_what_to_type_instead(
    profile: Profile, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    api = StandIn(monkeypatch, {})
    done = run("secret", command, "aws-b", "team-a/db")
    assert done.exit_code == 2
    assert f"m8ctl secret {command} team-a/db --store aws-b" in " ".join(done.stderr.split())
    assert api.asked == []


def test_without_a_store_secret_show_says_how_to_choose_one(
    profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile.store = None
    profile.save()
    api = StandIn(monkeypatch, {})
    done = run("secret", "show", "team-a/db")
    assert done.exit_code == 2
    assert "set-store" in done.stderr
    assert api.asked == []


# --- whoami and completion ---------------------------------------------------------------


def test_whoami_prints_the_callers_rights(
    profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    StandIn(monkeypatch, {"/v1/me": ME})
    done = run("whoami")
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines() == [
        "subject\talice",
        "roles\tuser",
        "stores\taws-b,vault-a",
        "prefixes\t*",
    ]
    assert json.loads(run("whoami", "-o", "json").stdout) == ME


def test_completion_offers_the_callers_stores_and_prefixes(
    profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = {**ME, "prefixes": ["team-a/", "team-b", "*"]}
    StandIn(monkeypatch, {"/v1/me": me})
    assert m8ctl.complete_store("") == ["aws-b", "vault-a"]
    assert m8ctl.complete_store("va") == ["vault-a"]
    assert m8ctl.complete_path("team-") == ["team-a/", "team-b"]  # never "*"


def test_completion_offers_nothing_when_the_api_cannot_be_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("M8CTL_CONFIG", str(tmp_path / "none.json"))  # not logged in
    assert m8ctl.complete_store("") == []
    assert m8ctl.complete_path("") == []


@pytest.mark.parametrize(
    ("words", "offered"),
    [
        ("m8ctl secret put team-a/x --store v", ["vault-a"]),
        ("m8ctl secret show te", ["team-a/"]),
        ("m8ctl secret list --prefix ", ["team-a/"]),
        ("m8ctl config set-store a", ["aws-b"]),
    ],
)
def test_the_shell_gets_stores_and_prefixes_through_its_completion(
    profile: Profile, monkeypatch: pytest.MonkeyPatch, words: str, offered: list[str]
) -> None:
    StandIn(monkeypatch, {"/v1/me": {**ME, "prefixes": ["team-a/"]}})
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    done = CliRunner().invoke(
        m8ctl.app,
        [],
        prog_name="m8ctl",
        env={"_M8CTL_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)},
    )
    assert done.stdout.split() == offered, done.output


# --- the stages of a wait -------------------------------------------------------------


def test_stages_show_on_a_terminal_only() -> None:
    piped, terminal = io.StringIO(), io.StringIO()
    with stages(Console(file=piped, force_terminal=False)) as stage:
        stage("pending: accepted")
    with stages(Console(file=terminal, force_terminal=True, width=200)) as stage:
        stage("pending: accepted, waiting")
    assert piped.getvalue() == ""
    assert "pending: accepted, waiting" in terminal.getvalue()


def test_a_pending_upload_is_described_without_claiming_more_than_the_api_says() -> None:
    text = upload_stage({"status": "pending"}, "vault-a")
    assert "pending" in text
    assert "queued or being written to vault-a" in text  # the API does not say which
    assert upload_stage({"status": "stored"}).startswith("stored")
