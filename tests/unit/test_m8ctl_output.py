"""What m8ctl prints for people and for scripts: tables, TSV and JSON; its arguments;
its shell completion; the stages of a wait. The API is a stand-in (httpx's MockTransport)
behind the real SDK."""

from __future__ import annotations

import base64
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from m8.client import m8ctl
from m8.client.outcome import (
    LONG_POLL,
    STAGE_FIRST_POLL,
    STAGE_POLL,
    STAGE_POLL_MAX,
    StagePolls,
)
from m8.client.output import Field, LazyConsole, OutputFormat, choose, tsv_cell, tsv_rows
from m8.client.profile import PinnedKey, Profile
from m8.client.progress import STAGE_TEXTS, stages, upload_stage
from m8.client.sdk import M8Client
from m8.crypto import (
    OutcomeReceipt,
    ReceiptSigningKey,
    encode_verify_key,
    sign_receipt,
    verify_key_fingerprint,
)
from m8.crypto.receipts import ReceiptStatus
from m8.protocol.status import UPLOAD_STAGES
from tests.support.client_http import via_httpx

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
            return real(
                server, token, transport=via_httpx(httpx.MockTransport(self.handle)), **options
            )

        monkeypatch.setattr("m8.client.sdk.M8Client", client)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode().partition("?")[0]
        self.asked.append(path)
        if path not in self.answers:
            problem = {"type": "urn:m8:problem:not_found", "title": "Not Found", "status": 404}
            return httpx.Response(404, json=problem)
        return httpx.Response(200, json=self.answers[path])


class Tty(io.StringIO):
    """A stream that says it is a terminal, as a real one does (unit tests only)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def fresh_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    """m8ctl makes its consoles at first use, with the terminal's width then: a process
    runs one command. Each test here runs as a process of its own would."""
    monkeypatch.setattr(m8ctl, "out", LazyConsole())
    monkeypatch.setattr(m8ctl, "err", LazyConsole(stderr=True))


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


@pytest.mark.parametrize("asked", [{"FORCE_COLOR": "1"}, {"TTY_COMPATIBLE": "1"}])
def test_asking_for_colour_on_a_pipe_still_prints_tsv_and_draws_no_stage(
    profile: Profile, monkeypatch: pytest.MonkeyPatch, asked: dict[str, str]
) -> None:
    for name, value in asked.items():
        monkeypatch.setenv(name, value)
    piped = Console(file=io.StringIO(), emoji=False)
    monkeypatch.setattr(m8ctl, "err", piped)
    assert piped.is_terminal  # rich takes the pipe for a terminal: m8ctl must not
    StandIn(monkeypatch, {"/v1/secrets": {"secrets": [SECRET], "next_after": None}})
    done = run("secret", "list")
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[0].split("\t")[:2] == ["store", "path"]
    api = Watched({"status": "pending", "stage": "queued"}, {"status": "stored"})
    seen: list[str] = []
    view = m8ctl._await(api, "u-1", "vault-a", 60, seen.append, OutputFormat.TABLE)  # type: ignore[arg-type]
    assert view["status"] == "stored"
    assert api.waits == [LONG_POLL] * 2  # no stage poll: nobody watches a pipe
    with stages(piped) as stage:
        stage("queued for vault-a")
    assert piped.file.getvalue() == ""  # type: ignore[attr-defined]


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
    piped, terminal = io.StringIO(), Tty()
    # A pipe that rich takes for a terminal (as with FORCE_COLOR=1) is still a pipe.
    with stages(Console(file=piped, force_terminal=True)) as stage:
        stage("pending: accepted")
    with stages(Console(file=terminal, width=200)) as stage:
        stage("pending: accepted, waiting")
    assert piped.getvalue() == ""
    assert "pending: accepted, waiting" in terminal.getvalue()


def test_m8ctls_own_console_draws_the_stages_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    terminal = Tty()
    monkeypatch.setattr(sys, "stderr", terminal)
    with stages(cast("Console", LazyConsole(stderr=True))) as stage:  # made at first use
        stage("pending: accepted, waiting")
    assert "pending: accepted, waiting" in terminal.getvalue()


def test_a_pending_upload_is_described_without_claiming_more_than_the_api_says() -> None:
    text = upload_stage({"status": "pending"}, "vault-a")
    assert "pending" in text
    assert "queued or being written to vault-a" in text  # the API does not say which
    assert upload_stage({"status": "stored"}).startswith("stored")


def test_each_stage_the_api_tells_reads_as_what_is_happening() -> None:
    def pending(stage: str) -> str:
        return upload_stage({"status": "pending", "stage": stage}, "vault-a")

    assert pending("accepted") == "accepted: recorded, not yet queued"
    assert pending("queued") == "queued for vault-a"
    assert pending("waiting").startswith("waiting: another upload to this path")
    assert pending("writing") == "writing to vault-a"
    # A stage this m8ctl does not know (a newer API's) claims nothing either.
    assert "queued or being written" in pending("replicating")


def test_every_stage_the_api_may_tell_has_its_text() -> None:
    assert set(STAGE_TEXTS) == set(UPLOAD_STAGES)
    for stage in UPLOAD_STAGES:
        assert "queued or being written" not in upload_stage(
            {"status": "pending", "stage": stage}, "vault-a"
        )


class Watched:
    """An API answering status requests in turn; records how long each may wait."""

    def __init__(self, *views: dict[str, Any]) -> None:
        self.views = list(views)
        self.waits: list[float] = []

    def upload(self, upload_id: str, wait: float = 0) -> dict[str, Any]:
        self.waits.append(wait)
        return self.views.pop(0)


def await_as(fmt: OutputFormat, terminal: bool, monkeypatch: pytest.MonkeyPatch) -> Watched:
    """m8ctl's wait for an upload that is queued, then written, then stored."""
    monkeypatch.setattr(m8ctl, "err", Console(file=Tty() if terminal else io.StringIO()))
    api = Watched(
        {"status": "pending", "stage": "queued"},
        {"status": "pending", "stage": "writing"},
        {"status": "stored"},
    )
    seen: list[str] = []
    view = m8ctl._await(api, "u-1", "vault-a", 60, seen.append, fmt)  # type: ignore[arg-type]
    assert view["status"] == "stored"
    if terminal and fmt is OutputFormat.TABLE:
        assert seen[1:3] == ["queued for vault-a", "writing to vault-a"]
    return api


def test_at_a_terminal_the_stage_is_asked_for_often_enough_to_move(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first answer soon, so that the first stage shows; then 2 s while it moves.
    waits = await_as(OutputFormat.TABLE, True, monkeypatch).waits
    assert waits == [STAGE_FIRST_POLL, STAGE_POLL, STAGE_POLL]


def test_a_stage_that_does_not_move_is_asked_for_less_and_less_often() -> None:
    polls = StagePolls()
    stages = [None, "queued", "queued", "queued", "queued", "queued", "writing", "writing"]
    waits = [polls({"status": "pending", "stage": stage}) for stage in stages]
    assert waits == [STAGE_FIRST_POLL, STAGE_POLL, 4.0, 8.0, STAGE_POLL_MAX, 10.0, 2.0, 4.0]


@pytest.mark.parametrize(
    ("fmt", "terminal"),
    [(OutputFormat.TABLE, False), (OutputFormat.JSON, True), (OutputFormat.TSV, True)],
)
def test_piped_or_for_a_program_the_wait_is_one_long_poll_at_a_time(
    monkeypatch: pytest.MonkeyPatch, fmt: OutputFormat, terminal: bool
) -> None:
    assert await_as(fmt, terminal, monkeypatch).waits == [LONG_POLL] * 3


# --- an upload's outcome: -o for `upload status` and `secret put` ---------------------------

UPLOAD_ID = "0b0e8f1c-4d2a-4c1e-9f1a-3a5b6c7d8e9f"
SENT = "ab" * 32


def signed_outcome(profile: Profile, status: ReceiptStatus = "stored") -> dict[str, Any]:
    """The API's view of upload UPLOAD_ID with its receipt, by a key `profile` pins."""
    key = ReceiptSigningKey.generate("rk-1")
    vk = key.verify_key
    profile.receipt_keys.pinned["rk-1"] = PinnedKey(
        encode_verify_key(vk), verify_key_fingerprint(vk)
    )
    profile.save()
    version, fingerprint = ("3", FINGERPRINT) if status == "stored" else (None, None)
    receipt = OutcomeReceipt(UPLOAD_ID, "vault-a", LONG_PATH, status, version, fingerprint, SENT)
    signature = base64.b64encode(sign_receipt(receipt, key)).decode()
    return {
        "upload_id": UPLOAD_ID, "status": status, "store": "vault-a", "path": LONG_PATH,
        "requested_by": "alice", "requested_at": "2026-11-30T11:59:59Z",
        "updated_at": "2026-11-30T12:00:00Z", "fingerprint": fingerprint,
        "upstream_version": version, "reason": None if status == "stored" else "bad_mac",
        "detail": None, "ciphertext_sha256": SENT, "stage": None,
        "receipt": {"receipt_key_id": "rk-1", "signature": signature},
    }  # fmt: skip


def status_of(monkeypatch: pytest.MonkeyPatch, view: dict[str, Any], *args: str) -> Any:
    StandIn(monkeypatch, {f"/v1/uploads/{UPLOAD_ID}": view})
    return run("upload", "status", UPLOAD_ID, *args, columns=60)


def tsv_outcome(text: str) -> dict[str, str]:
    header, row = text.splitlines()
    return dict(zip(header.split("\t"), row.split("\t"), strict=True))


def test_a_piped_outcome_is_a_header_and_one_tab_separated_line_nothing_cut(
    profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = status_of(monkeypatch, signed_outcome(profile))
    assert done.exit_code == 0, done.output
    outcome = tsv_outcome(done.stdout)
    assert list(outcome) == [f.name for f in m8ctl.UPLOAD_FIELDS]
    assert outcome["upload_id"] == UPLOAD_ID
    assert outcome["path"] == LONG_PATH
    assert (outcome["status"], outcome["receipt_verified"]) == ("stored", "true")
    assert outcome["fingerprint"] == FINGERPRINT
    assert done.stderr == ""


def test_an_outcome_reads_as_a_sentence_in_a_table_and_whole_in_wide(
    profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = signed_outcome(profile)
    table = status_of(monkeypatch, view, "-o", "table")
    wide = status_of(monkeypatch, view, "-o", "wide")
    as_json = status_of(monkeypatch, view, "--json")
    assert table.exit_code == wide.exit_code == as_json.exit_code == 0
    sentence = " ".join(table.stdout.split())  # wrapped to the terminal's 60 columns
    assert sentence.startswith("Stored vault-a:team-a/")
    assert "receipt verified)" in sentence
    assert f"fingerprint {FINGERPRINT}" in table.stdout
    assert UPLOAD_ID in wide.stdout  # nothing cut, however narrow the terminal
    assert LONG_PATH in wide.stdout
    lines = {line.split("  ", 1)[0]: line.split() for line in wide.stdout.splitlines()}
    assert lines["receipt verified"][-1] == "yes"
    assert "reason" not in wide.stdout  # only the fields that have a value
    assert json.loads(as_json.stdout)["receipt_verified"] is True


def test_an_unverified_outcome_never_reads_stored_and_keeps_its_error_on_stderr(
    profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    forged = {**signed_outcome(profile), "fingerprint": "fp1:" + "A" * 43}
    piped = status_of(monkeypatch, forged)
    table = status_of(monkeypatch, forged, "-o", "table")
    wide = status_of(monkeypatch, forged, "-o", "wide")
    assert piped.exit_code == table.exit_code == wide.exit_code == 10
    outcome = tsv_outcome(piped.stdout)
    assert (outcome["status"], outcome["claimed_status"]) == ("unverified", "stored")
    assert outcome["receipt_verified"] == "false"
    assert outcome["fingerprint"] == outcome["upstream_version"] == ""  # not vouched for
    assert "A" * 43 not in piped.stdout
    assert table.stdout == wide.stdout == ""  # for people, only the error
    for done in (piped, table, wide):
        assert "unverified outcome" in " ".join(done.stderr.split())


def test_a_rejection_is_a_line_for_programs_and_told_on_stderr(
    profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = status_of(monkeypatch, signed_outcome(profile, "rejected"), "-o", "tsv")
    assert done.exit_code == 3
    outcome = tsv_outcome(done.stdout)
    assert (outcome["status"], outcome["reason"]) == ("rejected", "bad_mac")
    assert "(receipt verified)" in " ".join(done.stderr.split())


def test_a_pending_upload_shows_its_stage_and_exits_8(
    profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = {**signed_outcome(profile), "status": "pending", "stage": "writing", "receipt": None}
    piped = status_of(monkeypatch, view)
    table = status_of(monkeypatch, view, "-o", "table")
    assert piped.exit_code == table.exit_code == 8
    assert tsv_outcome(piped.stdout)["stage"] == "writing"
    assert "still pending (writing to vault-a)" in " ".join(table.stderr.split())
    assert table.stdout == ""


def test_json_and_another_format_for_an_outcome_is_a_usage_error(profile: Profile) -> None:
    done = run("upload", "status", UPLOAD_ID, "--json", "-o", "wide")
    assert done.exit_code == 2
    assert "two formats" in " ".join(done.stderr.split())
    put = run("secret", "put", "team-a/x", "--json", "-o", "tsv")
    assert put.exit_code == 2
    assert "two formats" in " ".join(put.stderr.split())


def test_an_unsigned_outcome_shows_what_m8ctl_chose_and_nothing_the_api_says_it_wrote(
    profile: Profile, capsys: pytest.CaptureFixture[str]
) -> None:
    said = {
        **signed_outcome(profile),
        "status": "pending",
        "store": "elsewhere",
        "path": "their/path",
        "ciphertext_sha256": "cd" * 32,
    }
    chosen = ("vault-a", LONG_PATH, SENT)
    for fmt in (OutputFormat.TSV, OutputFormat.JSON):
        with pytest.raises(typer.Exit) as exit_:
            m8ctl._finish(None, profile, UPLOAD_ID, said, fmt, chosen)  # type: ignore[arg-type]
        assert exit_.value.exit_code == 8
        printed = capsys.readouterr().out
        shown = tsv_outcome(printed) if fmt is OutputFormat.TSV else json.loads(printed)
        assert (shown["store"], shown["path"]) == ("vault-a", LONG_PATH)
        assert shown["ciphertext_sha256"] == SENT
        assert not shown["fingerprint"]
        assert not shown["upstream_version"]
        assert "receipt" not in shown or shown["receipt"] is None
