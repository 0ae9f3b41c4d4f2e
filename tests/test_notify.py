"""Notifications of `reconciler run`: a real SMTP server (aiosmtpd) and a real HTTP server on
127.0.0.1. A delivery failure is reported, never blocks or undoes the sync, never changes the
exit code, and no password or token reaches the output."""

from __future__ import annotations

import http.server
import json
import shutil
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from gitrepo import (
    DOMAIN,
    add_domain,
    change_directory,
    commit_all,
    git,
    head,
    invoke,
    isolate_git,
    make_repo,
    spec_path,
    state_path,
    status,
    users,
)
from slapd import free_port, make_ca, make_server_cert

from reconciler.notify import Report, body, payload, subject

pytestmark = pytest.mark.git

CANARY = "canary-Smtp-Pa55word"
TOKEN = "canary-webhook-token"
OTHER = "other.org"


# --- a real SMTP server ---------------------------------------------------------------------------


@dataclass
class Inbox:
    """An aiosmtpd handler keeping what it received; ``refuse`` answers every RCPT with 550."""

    messages: list[tuple[Envelope, Message]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    refuse: bool = False

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.refuse:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.content if isinstance(envelope.content, bytes) else b""
        self.messages.append((envelope, message_from_bytes(data, policy=policy.default)))
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        self.logins.append((login, password))
        # handled=False: aiosmtpd answers a failure with 535 itself.
        return AuthResult(success=login == "bot" and password == CANARY, handled=False)


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    """A plain SMTP server on 127.0.0.1 (no TLS, no AUTH)."""
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(CA, certificate, key) for 127.0.0.1, made with openssl for this module."""
    directory = tmp_path_factory.mktemp("smtp-tls")
    ca = make_ca(directory)
    cert, key = make_server_cert(directory, ca)
    return ca, cert, key


@pytest.fixture
def tls_inbox(certificates: tuple[Path, Path, Path]) -> Iterator[tuple[Inbox, int]]:
    """An SMTP server on 127.0.0.1 that requires STARTTLS, and AUTH (only over TLS)."""
    _, cert, key = certificates
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = Inbox()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=context,
        require_starttls=True,
        authenticator=handler.authenticate,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


def content(message: Message) -> str:
    assert isinstance(message, EmailMessage)
    text = message.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")  # as it went over the wire


# --- a real HTTP server ---------------------------------------------------------------------------


@dataclass
class Hook:
    posts: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    status: int = 204


@pytest.fixture
def webhook() -> Iterator[tuple[Hook, int]]:
    hook = Hook()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            data = json.loads(self.rfile.read(length))
            hook.posts.append((self.path, dict(self.headers.items()), data))
            self.send_response(hook.status)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet test output

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- repositories ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_git(monkeypatch)


def notify_repo(root: Path, notify: str, domain: str = DOMAIN) -> Path:
    """A repository whose domain has ``notify`` (YAML under the notify key) and a fine
    other.org without notifications."""
    repo = make_repo(root, users(3))
    add_domain(repo, OTHER, users(2, prefix="o"))
    path = spec_path(repo, domain)
    path.write_text(path.read_text(encoding="utf-8") + "notify:\n" + notify, encoding="utf-8")
    commit_all(repo, "Notifications")
    return repo


def email(port: int, *, on: str = "[changes, blocked, errors]", smtp: str = "") -> str:
    return (
        "  email:\n    to: [postmaster@example.com, ops@example.com]\n"
        "    from: reconciler@example.com\n"
        f"    smtp: {{host: 127.0.0.1, port: {port}, timeout: 5{smtp}}}\n"
        f"    on: {on}\n"
    )


# --- the report -----------------------------------------------------------------------------------


def test_the_report_says_what_happened() -> None:
    report = Report(
        domain="example.com",
        outcome="refused",
        event="blocked",
        counts={"add": 0, "update": 0, "remove": 7},
        summary="example.com: 0 to add, 0 to update, 7 to remove (10 → 3 recipients)",
        plan_lines=("example.com  (LDIF x: 3 matching entries)", "  - a@example.com  mailbox"),
        reasons=("example.com: 7 removals, over policy.limits.max_deletes 5; …",),
    )
    assert subject(report) == "reconciler: example.com refused (add=0 update=0 remove=7)"
    assert body(report) == (
        "Domain:  example.com\n"
        "Outcome: refused\n"
        "Plan:    example.com: 0 to add, 0 to update, 7 to remove (10 → 3 recipients)\n"
        "\n"
        "Refused, nothing was applied:\n"
        "  example.com: 7 removals, over policy.limits.max_deletes 5; …\n"
        "\n"
        "The plan:\n"
        "example.com  (LDIF x: 3 matching entries)\n"
        "  - a@example.com  mailbox\n"
    )
    assert payload(report)["refusals"] == list(report.reasons)
    assert payload(report)["event"] == "blocked"


def test_a_long_plan_is_capped_in_the_mail() -> None:
    lines = tuple(f"  + u{n}@example.com" for n in range(250))
    text = body(Report("example.com", "applied", "changes", plan_lines=lines))
    assert "  + u199@example.com\n" in text
    assert "u200@" not in text
    assert text.endswith("  … and 50 more lines\n")


# --- mail on changes, blocked, errors; nothing when nothing happened ------------------------------


def test_a_mail_on_changes_and_none_when_in_sync(
    inbox: tuple[Inbox, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, port = inbox
    repo = notify_repo(tmp_path, email(port))
    monkeypatch.chdir(repo)
    result = invoke("run", DOMAIN, OTHER)
    assert result.exit_code == 0, result.stderr
    [(envelope, message)] = handler.messages  # other.org has no notify
    assert envelope.mail_from == "reconciler@example.com"
    assert envelope.rcpt_tos == ["postmaster@example.com", "ops@example.com"]
    assert message["Subject"] == "reconciler: example.com applied (add=6 update=0 remove=0)"
    text = content(message)
    commit = git(repo, "log", "-1", "--format=%H", "--", f"state/{DOMAIN}.yaml")
    assert f"Commit:  {commit}" in text
    assert "Plan:    example.com: 6 to add, 0 to update, 0 to remove (0 → 6 recipients)" in text
    assert '  + user01@example.com  mailbox "User 01"' in text
    assert "email to postmaster@example.com, ops@example.com: sent" in result.stderr

    again = invoke("run", DOMAIN, OTHER)
    assert again.exit_code == 0
    assert len(handler.messages) == 1, "nothing happened: nothing is sent"


def test_a_mail_when_blocked(
    inbox: tuple[Inbox, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, port = inbox
    repo = notify_repo(tmp_path, email(port, on="[blocked]"))
    monkeypatch.chdir(repo)
    assert invoke("run", DOMAIN).exit_code == 0
    assert handler.messages == [], "on: [blocked] does not send changes"
    change_directory(repo, [], DOMAIN, "An empty export")
    result = invoke("run", DOMAIN)
    assert result.exit_code == 4
    [(_, message)] = handler.messages
    assert message["Subject"] == "reconciler: example.com refused (add=0 update=0 remove=6)"
    text = content(message)
    assert "Refused, nothing was applied:\n  the directory gave no recipients" in text


def test_a_mail_on_errors(
    inbox: tuple[Inbox, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, port = inbox
    repo = notify_repo(tmp_path, email(port, on="[errors]"))
    (repo / "inventories" / "data" / f"{DOMAIN}.ldif").write_text("version: 1\ndn: x\nbad\n")
    commit_all(repo, "A broken export")
    monkeypatch.chdir(repo)
    result = invoke("run", DOMAIN, OTHER)
    assert result.exit_code == 1
    [(_, message)] = handler.messages
    assert message["Subject"] == "reconciler: example.com failed"
    text = content(message)
    assert "Error, nothing was applied:\n  " in text
    assert "example.com.ldif" in text
    assert state_path(repo, OTHER).exists()


# --- a failing SMTP server never blocks the sync --------------------------------------------------


def test_smtp_down_does_not_block_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = notify_repo(tmp_path, email(free_port()))  # nothing listens there
    monkeypatch.chdir(repo)
    result = invoke("run", DOMAIN, OTHER)
    assert result.exit_code == 0, "a failed notification does not change the exit code"
    assert state_path(repo, DOMAIN).exists()
    assert "add=6 update=0 remove=0" in invoke("history", DOMAIN).stdout
    failure = "example.com: email to postmaster@example.com, ops@example.com: failed: "
    assert failure + "ConnectionRefusedError" in result.stdout
    assert failure in result.stderr
    assert status(repo) == ""


def test_smtp_down_keeps_a_refusal_at_exit_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = notify_repo(tmp_path, email(free_port()))
    monkeypatch.chdir(repo)
    assert invoke("run", DOMAIN).exit_code == 0
    change_directory(repo, [], DOMAIN, "An empty export")
    result = invoke("run", DOMAIN)
    assert result.exit_code == 4
    assert "failed: ConnectionRefusedError" in result.stdout


def test_rejected_recipients_are_reported(
    inbox: tuple[Inbox, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, port = inbox
    handler.refuse = True
    repo = notify_repo(tmp_path, email(port))
    monkeypatch.chdir(repo)
    result = invoke("run", DOMAIN)
    assert result.exit_code == 0
    assert "failed: SMTPRecipientsRefused" in result.stdout
    assert "no such user here" in result.stdout
    assert state_path(repo, DOMAIN).exists()


# --- STARTTLS and AUTH ----------------------------------------------------------------------------


AUTH_SMTP = ", starttls: true, ca_file: certs/smtp-ca.pem, username: bot, password: {env: SMTP_PW}"


def tls_repo(root: Path, port: int, ca: Path, smtp: str = AUTH_SMTP) -> Path:
    """A repository whose example.com mails through ``port`` trusting ``ca``; the current dir
    is not changed."""
    repo = notify_repo(root, email(port, smtp=smtp))
    (repo / "inventories" / "certs").mkdir()
    shutil.copy(ca, repo / "inventories" / "certs" / "smtp-ca.pem")
    commit_all(repo, "The mail server's CA")
    return repo


@pytest.fixture
def auth_repo(
    tls_inbox: tuple[Inbox, int],
    certificates: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Inbox, Path]:
    """The STARTTLS + AUTH server and a repository logging in to it as bot with $SMTP_PW
    (unset: each test sets it); the current directory."""
    handler, port = tls_inbox
    repo = tls_repo(tmp_path, port, certificates[0])
    monkeypatch.chdir(repo)
    monkeypatch.delenv("SMTP_PW", raising=False)
    return handler, repo


def test_starttls_and_auth_with_a_password_from_the_environment(
    auth_repo: tuple[Inbox, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, _ = auth_repo
    monkeypatch.setenv("SMTP_PW", CANARY)
    result = invoke("run", DOMAIN)
    assert result.exit_code == 0, result.stderr
    assert handler.logins == [("bot", CANARY)]
    assert len(handler.messages) == 1
    assert CANARY not in result.stdout + result.stderr
    assert "example.com: email to postmaster@example.com, ops@example.com: sent" in result.stderr


def test_a_wrong_smtp_password_is_reported_without_the_password(
    auth_repo: tuple[Inbox, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, repo = auth_repo
    wrong = "canary-wrong-Pa55word"
    monkeypatch.setenv("SMTP_PW", wrong)
    result = invoke("run", DOMAIN)
    assert result.exit_code == 0
    assert set(handler.logins) == {("bot", wrong)}  # smtplib tries PLAIN, then LOGIN
    assert handler.messages == []
    assert "failed: SMTPAuthenticationError" in result.stdout
    assert wrong not in result.stdout + result.stderr
    assert state_path(repo, DOMAIN).exists()


def test_an_unset_password_variable_is_reported(auth_repo: tuple[Inbox, Path]) -> None:
    handler, _ = auth_repo
    result = invoke("run", DOMAIN)
    assert result.exit_code == 0
    assert "failed: notify.email.smtp.password: environment variable SMTP_PW is not set" in (
        result.stdout
    )
    assert handler.logins == [] and handler.messages == []


def test_an_untrusted_certificate_stops_before_auth(
    tls_inbox: tuple[Inbox, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, port = tls_inbox
    repo = tls_repo(tmp_path, port, make_ca(tmp_path / "other-ca"))
    monkeypatch.chdir(repo)
    monkeypatch.setenv("SMTP_PW", CANARY)
    result = invoke("run", DOMAIN)
    assert result.exit_code == 0
    assert "failed: SSLCertVerificationError" in result.stdout
    assert handler.logins == [], "the password is never sent over an unverified connection"


def test_starttls_never_falls_back_to_plain(
    inbox: tuple[Inbox, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, port = inbox  # offers no STARTTLS
    repo = notify_repo(tmp_path, email(port, smtp=", starttls: true"))
    monkeypatch.chdir(repo)
    result = invoke("run", DOMAIN)
    assert result.exit_code == 0
    assert "failed: SMTPNotSupportedError" in result.stdout
    assert handler.messages == []


def test_a_server_requiring_starttls_refuses_a_plain_client(
    tls_inbox: tuple[Inbox, int],
    certificates: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler, port = tls_inbox
    repo = tls_repo(tmp_path, port, certificates[0], "")  # no starttls: the server wants it
    monkeypatch.chdir(repo)
    result = invoke("run", DOMAIN)
    assert result.exit_code == 0
    assert "email to postmaster@example.com, ops@example.com: failed: " in result.stdout
    assert "STARTTLS" in result.stdout  # the server's answer: 530 Must issue a STARTTLS first
    assert handler.messages == []


# --- the webhook ----------------------------------------------------------------------------------


def test_a_webhook_post_with_a_token_header(
    webhook: tuple[Hook, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook, port = webhook
    notify = (
        f"  webhook:\n    url: http://127.0.0.1:{port}/services/{TOKEN}\n"
        "    headers: {X-Team: mail, Authorization: {env: HOOK_TOKEN}}\n"
    )
    repo = notify_repo(tmp_path, notify)
    monkeypatch.chdir(repo)
    monkeypatch.setenv("HOOK_TOKEN", f"Bearer {TOKEN}")
    result = invoke("run", DOMAIN)
    assert result.exit_code == 0, result.stderr
    [(path, headers, data)] = hook.posts
    assert path == f"/services/{TOKEN}"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["X-Team"] == "mail"
    assert headers["Content-Type"] == "application/json"
    assert data["domain"] == DOMAIN
    assert data["outcome"] == "applied"
    assert data["event"] == "changes"
    assert data["counts"] == {"add": 6, "update": 0, "remove": 0}
    assert data["commit"] == head(repo)
    assert f"webhook to 127.0.0.1:{port}: sent" in result.stderr
    assert TOKEN not in result.stdout + result.stderr

    assert invoke("run", DOMAIN).exit_code == 0
    assert len(hook.posts) == 1, "nothing happened: nothing is posted"


def test_a_failing_webhook_is_reported_and_changes_nothing(
    webhook: tuple[Hook, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook, port = webhook
    hook.status = 500
    repo = notify_repo(tmp_path, f"  webhook: {{url: 'http://127.0.0.1:{port}/{TOKEN}'}}\n")
    monkeypatch.chdir(repo)
    result = invoke("run", DOMAIN)
    assert result.exit_code == 0
    assert f"webhook to 127.0.0.1:{port}: failed: OSError: the server answered 500" in result.stdout
    assert TOKEN not in result.stdout + result.stderr
    assert state_path(repo, DOMAIN).exists()


def test_an_unreachable_webhook_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    repo = notify_repo(tmp_path, f"  webhook: {{url: 'http://127.0.0.1:{port}/x', timeout: 2}}\n")
    monkeypatch.chdir(repo)
    result = invoke("run", DOMAIN)
    assert result.exit_code == 0
    assert "failed: OSError: cannot reach the webhook" in result.stdout


def test_a_header_secret_with_a_line_break_is_refused_without_showing_it(
    webhook: tuple[Hook, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook, port = webhook
    notify = (
        f"  webhook:\n    url: 'http://bot:{TOKEN}@127.0.0.1:{port}/x'\n"
        "    headers: {Authorization: {env: HOOK_TOKEN}}\n"
    )
    repo = notify_repo(tmp_path, notify)
    monkeypatch.chdir(repo)
    monkeypatch.setenv("HOOK_TOKEN", f"Bearer {TOKEN}\nX-Injected: 1")
    result = invoke("run", DOMAIN)
    assert result.exit_code == 0
    assert (
        f"webhook to 127.0.0.1:{port}: failed: OSError: the value of header Authorization "
        "has a line break or NUL"
    ) in result.stdout
    assert TOKEN not in result.stdout + result.stderr, "nor the URL's user:password@"
    assert hook.posts == []
