"""Login with directory credentials (`reconciler auth`, reconciler.auth) against a real slapd.

Every login here goes over StartTLS with the certificate verified against the test CA, as the
spec's default transport. The server logs every operation (slapd -d stats), so a test can see
what reached the directory: which binds, which search filters, and that refused attempts never
connected at all. Active Directory's UPN and DOMAIN\\user binds go through tests/adfront.py,
which resolves those names to DNs the way AD does; slapd still checks every password.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest
from adfront import AdFront
from conftest import require_slapd_tools
from gitrepo import commit_all, init_repo, isolate_git
from slapd import (
    BASE_DN,
    READER_DN,
    READER_PASSWORD,
    SlapdServer,
    find_tool,
    free_port,
    make_ca,
)
from terminal import run_in_terminal
from typer.testing import CliRunner, Result

import reconciler
from reconciler.auth import FAILURE_FILE, Login, authenticate, counter_key
from reconciler.cli import app
from reconciler.errors import ConfigError, DirectoryError, LoginFailed
from reconciler.inventory import load_specs
from reconciler.ldap_connection import bind, parse_server_url
from reconciler.recipient import Recipient
from reconciler.reconcile import Workspace
from reconciler.secrets import Secret
from reconciler.state import State, dump_state

pytestmark = [
    pytest.mark.slapd,
    pytest.mark.git,
]

DOMAIN = "example.com"
PASSWORD_VAR = "RECONCILER_TEST_AUTH_BIND_PASSWORD"
PEOPLE = f"ou=People,{BASE_DN}"
CANARY = "Canary-5d1e-not-for-logs"  # alice's password: it must never show up anywhere
WRONG_CANARY = "Canary-wrong-0a9f-not-for-logs"
SAME = LoginFailed.MESSAGE
USERS = "(&(objectClass=inetOrgPerson)(mail=*))"  # the openldap flavor's users.filter
WEIRD_UID = "star*(x)\\y"  # every RFC 4515 metacharacter but NUL, in a real uid


def person(uid: str, password: str, *, uac: int = 512, mail: str | None = None) -> str:
    """An inetOrgPerson with the AD-like ``user`` class: found by uid, UPN or sAMAccountName."""
    mail = mail or f"{uid}@example.com"
    dn_uid = uid.replace("\\", "\\\\")  # of RFC 4514's specials, only "\\" occurs here
    return (
        f"dn: uid={dn_uid},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: user\n"
        f"uid: {uid}\ncn: {uid.title()}\nsn: {uid}\nmail: {mail}\nuserPassword: {password}\n"
        f"userPrincipalName: {mail}\nsAMAccountName: {uid}\nobjectCategory: person\n"
        f"userAccountControl: {uac}\n\n"
    )


def dn_of(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


AUTH_LDIF = (
    f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: People\n\n"
    + person("alice", CANARY)
    + person("bob", "Bob-pw-1")
    + person("dave", "Dave-pw-1", uac=514)  # ACCOUNTDISABLE
    + person("erin", "Erin-pw-1")  # in the directory, not in the state
    + person("frank", "Frank-pw-1")  # in the state, deactivated there
    + person("sam1", "Sam-pw-1").replace("sn: sam1", "sn: Same")
    + person("sam2", "Sam-pw-2").replace("sn: sam2", "sn: Same")
    + person(WEIRD_UID, "Weird-pw-1", mail="weird@example.com")
    + person("sentinel", "Sentinel-pw-1")
)
STATE = {
    "alice@example.com": Recipient("mailbox", "Alice", "id-alice", "active"),
    "bob@example.com": Recipient("mailbox", "Bob", "id-bob", "active"),
    "dave@example.com": Recipient("mailbox", "Dave", "id-dave", "active"),
    "frank@example.com": Recipient("mailbox", "Frank", "id-frank", "disabled"),
    "sam1@example.com": Recipient("mailbox", "Sam", "id-sam1", "active"),
    "weird@example.com": Recipient("mailbox", "Weird", "id-weird", "active"),
    "sentinel@example.com": Recipient("mailbox", "Sentinel", "id-s", "active"),
    "a.alias@example.com": Recipient("alias", target="alice@example.com"),
}


@pytest.fixture(scope="module")
def auth_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    require_slapd_tools()
    server = SlapdServer(tmp_path_factory.mktemp("auth"), debug="stats")
    server.load_ldif(AUTH_LDIF)
    with server:
        yield server


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_git(monkeypatch)
    monkeypatch.setenv(PASSWORD_VAR, READER_PASSWORD)
    logger = logging.getLogger("reconciler")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)


def make_repo(root: Path, servers: list[str], ca_file: Path, **auth: Any) -> Workspace:
    """A GitOps repository: the spec (openldap flavor, StartTLS, the reader as service bind,
    AD's disabled bit as disabled_filter) and a state with STATE, committed."""
    repo = init_repo(root / "repo")
    inventory = repo / "inventories"
    inventory.mkdir()
    (inventory / "ca.pem").write_bytes(ca_file.read_bytes())
    directory = {
        "flavor": "openldap",
        "servers": servers,
        "ca_file": "ca.pem",
        "bind_dn": READER_DN,
        "password": {"env": PASSWORD_VAR},
        "base_dn": BASE_DN,
        "timeout": 3,
    }
    users = {"disabled_filter": "(userAccountControl:1.2.840.113556.1.4.803:=2)"}
    spec = {"domain": DOMAIN, "directory": directory, "users": users}
    if auth:
        spec["auth"] = auth
    (inventory / f"{DOMAIN}.yaml").write_text(json.dumps(spec, indent=2), encoding="utf-8")
    (repo / "state").mkdir()
    state = dump_state(State(DOMAIN, STATE), f"inventories/{DOMAIN}.yaml")
    (repo / "state" / f"{DOMAIN}.yaml").write_text(state, encoding="utf-8")
    commit_all(repo, "Inventory and state")
    return Workspace(inventory, repo / "state", repo)


@pytest.fixture
def workspace(auth_slapd: SlapdServer, tmp_path: Path) -> Workspace:
    return make_repo(tmp_path, [auth_slapd.ldap_url], auth_slapd.ca_file)


class Clock:
    """An injectable clock: the failure window passes without sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def login(workspace: Workspace, username: str, password: str, **kw: Any) -> Login:
    return authenticate(workspace, DOMAIN, username, Secret(password, "test"), **kw)


def refused(workspace: Workspace, username: str, password: str, **kw: Any) -> LoginFailed:
    with pytest.raises(LoginFailed) as raised:
        login(workspace, username, password, **kw)
    return raised.value


def cli(workspace: Workspace, *args: str, password: str | None = None) -> Result:
    """``reconciler ARGS --repo REPO`` with ``password`` (+ a line break) on stdin."""
    logger = logging.getLogger("reconciler")
    handlers, propagate, level = logger.handlers[:], logger.propagate, logger.level
    try:
        stdin = None if password is None else password + "\n"
        return CliRunner().invoke(app, [*args, "--repo", str(workspace.repo_dir)], input=stdin)
    finally:
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)


# --- what reached the directory ---------------------------------------------------------------


def server_log(server: SlapdServer, action: Callable[[], object]) -> str:
    """slapd's log of what ``action`` did, up to a marker search run after it (slapd writes
    its log asynchronously: the marker shows that everything before it is in)."""
    start = server.log_file.stat().st_size
    try:
        action()
    finally:
        marker = f"marker-{uuid.uuid4().hex}"
        tool = find_tool("ldapsearch")
        import subprocess

        subprocess.run(
            [tool, "-x", "-H", server.ldap_url, "-b", BASE_DN, f"(uid={marker})", "1.1"],
            capture_output=True,
            env={"LDAPNOINIT": "1", "PATH": "/usr/bin:/bin"},
            check=False,
        )
        deadline = time.monotonic() + 10
        text = ""
        while marker not in text and time.monotonic() < deadline:
            time.sleep(0.05)
            with server.log_file.open("rb") as log:
                log.seek(start)
                text = log.read().decode(errors="replace")
    assert marker in text
    marker_line = next(line for line in text.splitlines() if marker in line)
    conn = re.search(r"conn=\d+ ", marker_line)
    assert conn is not None
    return "\n".join(line for line in text.splitlines() if conn[0] not in line)


def connections(text: str) -> int:
    return len(re.findall(r" ACCEPT from ", text))


def binds(text: str) -> list[str]:
    return re.findall(r' BIND dn="([^"]*)" method=128', text)


def searches(text: str) -> list[str]:
    return re.findall(r' SRCH base="[^"]*" scope=2 deref=0 filter="([^"]*)"', text)


def assert_no_account_bound(text: str) -> None:
    """The service searched; the password went only to a decoy DN that does not exist (so that
    refusing an unknown name takes as long as refusing a wrong password), on a second
    connection as for a real user."""
    service, decoy = binds(text)
    assert service == READER_DN
    assert re.fullmatch(f"cn=reconciler-no-such-user-[0-9a-f]{{32}},{BASE_DN}", decoy)
    assert connections(text) == 2
    assert re.search(r" RESULT tag=97 err=49 ", text)  # the decoy: invalidCredentials


# --- 1: a good password, over StartTLS ---------------------------------------------------------


def test_a_valid_password_logs_in_over_starttls(
    auth_slapd: SlapdServer, workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reconciler")
    found: list[Login] = []
    text = server_log(auth_slapd, lambda: found.append(login(workspace, "alice", CANARY)))
    assert found == [
        Login(DOMAIN, "alice", dn_of("alice"), "alice@example.com", auth_slapd.ldap_url)
    ]
    # The service bind searched, then the user's own bind on a connection of its own; each
    # connection negotiated StartTLS before it bound.
    assert binds(text) == [READER_DN, dn_of("alice")]
    assert searches(text) == [f"(&{USERS}(uid=alice))"]
    assert connections(text) == 2
    for conn in re.findall(r"conn=(\d+) op=\d+ BIND", text):
        ops = [line for line in text.splitlines() if f"conn={conn} " in line]
        starttls = next(i for i, x in enumerate(ops) if "EXT oid=1.3.6.1.4.1.1466.20037" in x)
        assert starttls < next(i for i, x in enumerate(ops) if " BIND " in x)
    assert f"{DOMAIN}: login of 'alice' as {dn_of('alice')}" in caplog.messages

    result = cli(workspace, "auth", DOMAIN, "alice", password=CANARY)
    assert (result.exit_code, result.stdout) == (0, "alice@example.com\n"), result.output


def test_the_password_line_keeps_its_spaces(workspace: Workspace, auth_slapd: SlapdServer) -> None:
    """Only the line break is taken off stdin: a space is part of a password."""
    result = cli(workspace, "auth", DOMAIN, "alice", password=CANARY + " ")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.endswith(f"Error: {SAME}\n")


# --- 2: no user enumeration ----------------------------------------------------------------------


def test_unknown_user_and_wrong_password_look_the_same(
    workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reconciler")
    unknown = refused(workspace, "nobody", WRONG_CANARY)
    wrong = refused(workspace, "alice", WRONG_CANARY)
    assert str(unknown) == str(wrong) == SAME
    assert (unknown.reason, wrong.reason) == ("unknown user", "wrong password")
    assert f"{DOMAIN}: login of 'nobody' failed: unknown user" in caplog.messages
    assert f"{DOMAIN}: login of 'alice' failed: wrong password" in caplog.messages

    results = [
        cli(workspace, "auth", DOMAIN, user, *quiet, password=WRONG_CANARY)
        for quiet in ([], ["-q"])
        for user in ("nobody", "bob")
    ]
    assert {r.exit_code for r in results} == {1}
    assert {r.stdout for r in results} == {""}
    # The last line (the answer) is the same; the log line above it names the reason class.
    assert {r.stderr.splitlines()[-1] for r in results} == {f"Error: {SAME}"}
    assert results[0].stderr.splitlines()[0] == f"{DOMAIN}: login of 'nobody' failed: unknown user"
    assert results[1].stderr.splitlines()[0] == f"{DOMAIN}: login of 'bob' failed: wrong password"
    # Quiet, the whole output is the same: what a panel may show a user.
    assert results[2].output == results[3].output == f"Error: {SAME}\n"


# --- 3-4: refused before any bind ----------------------------------------------------------------


@pytest.mark.parametrize("password", ["", " ", "\t", " \t  "], ids=repr)
def test_an_empty_password_is_refused_before_any_bind(
    auth_slapd: SlapdServer, workspace: Workspace, password: str
) -> None:
    raised: list[LoginFailed] = []

    def attempt() -> None:
        with pytest.raises(LoginFailed) as error:
            login(workspace, "alice", password)
        raised.append(error.value)

    text = server_log(auth_slapd, attempt)
    assert connections(text) == 0  # not even a TCP connection
    assert str(raised[0]) == "login refused: the password is empty"
    result = cli(workspace, "auth", DOMAIN, "alice", password=password)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "Error: login refused: the password is empty"
    assert not (workspace.repo_dir / ".git" / FAILURE_FILE).exists()  # not counted


def test_no_stdin_at_all_is_an_empty_password(workspace: Workspace) -> None:
    result = CliRunner().invoke(
        app, ["auth", DOMAIN, "alice", "--repo", str(workspace.repo_dir)], input=""
    )
    assert result.exit_code == 1
    assert "Error: login refused: the password is empty" in result.stderr


@pytest.mark.parametrize(
    ("username", "problem"),
    [
        ("alice\x00", "contains control characters"),
        ("\x00", "contains control characters"),
        ("alice\n", "contains control characters"),
        ("ali\rce", "contains control characters"),
        ("alice\x7f", "contains control characters"),
        ("alice\u2028", "contains control characters"),
        ("", "is empty"),
        ("   ", "is empty"),
        ("a" * 257, "is longer than 256 characters"),
    ],
    ids=repr,
)
def test_a_bad_user_name_is_refused_before_any_bind(
    auth_slapd: SlapdServer, workspace: Workspace, username: str, problem: str
) -> None:
    messages: list[str] = []

    def attempt() -> None:
        with pytest.raises(LoginFailed) as error:
            login(workspace, username, CANARY)
        messages.append(str(error.value))

    text = server_log(auth_slapd, attempt)
    assert connections(text) == 0
    assert messages == [f"login refused: the user name {problem}"]


# --- 5: filter metacharacters --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "sent"),
    [
        ("*", r"\2A"),
        ("al*", r"al\2A"),
        ("*)(uid=*", r"\2A\29\28uid=\2A"),
        ("alice)(|(uid=*", r"alice\29\28|\28uid=\2A"),
        ("\\", r"\5C"),
        (r"\2a", r"\5C2a"),
        ("alice)", r"alice\29"),
        ("(alice", r"\28alice"),
    ],
    ids=repr,
)
def test_filter_metacharacters_in_the_user_name_are_escaped(
    auth_slapd: SlapdServer, workspace: Workspace, username: str, sent: str
) -> None:
    """With alice's password: an unescaped ``*`` or ``)(`` would find her (or everyone)."""
    reasons: list[str] = []

    def attempt() -> None:
        with pytest.raises(LoginFailed) as error:
            login(workspace, username, CANARY)
        reasons.append(error.value.reason)

    text = server_log(auth_slapd, attempt)
    assert reasons == ["unknown user"]
    assert searches(text) == [f"(&{USERS}(uid={sent}))"]
    assert_no_account_bound(text)


def test_a_user_name_made_of_metacharacters_logs_in_as_itself(
    auth_slapd: SlapdServer, workspace: Workspace
) -> None:
    found: list[Login] = []
    text = server_log(auth_slapd, lambda: found.append(login(workspace, WEIRD_UID, "Weird-pw-1")))
    assert found[0].address == "weird@example.com"
    assert searches(text) == [f"(&{USERS}(uid=star\\2A\\28x\\29\\5Cy))"]
    assert refused(workspace, WEIRD_UID, "Sam-pw-1").reason == "wrong password"


def test_a_nul_in_the_user_name_never_reaches_a_filter(
    auth_slapd: SlapdServer, workspace: Workspace
) -> None:
    """NUL is a control character: refused before the search that would have escaped it
    (escape_filter_value turns it into \\00, tested with the filter module)."""
    raised: list[LoginFailed] = []

    def attempt() -> None:
        with pytest.raises(LoginFailed) as error:
            login(workspace, "a\x00*", "x1")
        raised.append(error.value)

    text = server_log(auth_slapd, attempt)
    assert raised[0].reason == "malformed user name"
    assert connections(text) == 0


# --- 6: exactly one entry ------------------------------------------------------------------------


def test_several_matching_entries_fail_without_a_user_bind(
    auth_slapd: SlapdServer, tmp_path: Path
) -> None:
    workspace = make_repo(
        tmp_path, [auth_slapd.ldap_url], auth_slapd.ca_file, search_attribute="sn"
    )
    reasons: list[str] = []

    def attempt() -> None:
        with pytest.raises(LoginFailed) as error:
            login(workspace, "Same", "Sam-pw-1")  # sam1's password: still not good enough
        reasons.append(error.value.reason)

    text = server_log(auth_slapd, attempt)
    assert reasons == ["user name matches several entries"]
    assert_no_account_bound(text)


# --- 7-8: refused after the bind -----------------------------------------------------------------


def test_a_disabled_account_is_refused_after_the_bind(
    auth_slapd: SlapdServer, workspace: Workspace
) -> None:
    reasons: list[str] = []

    def attempt() -> None:
        with pytest.raises(LoginFailed) as error:
            login(workspace, "dave", "Dave-pw-1")
        reasons.append(error.value.reason)

    text = server_log(auth_slapd, attempt)
    assert reasons == ["account disabled"]
    assert binds(text) == [READER_DN, dn_of("dave")]  # the password was right
    result = cli(workspace, "auth", DOMAIN, "dave", "-q", password="Dave-pw-1")
    assert (result.exit_code, result.output) == (1, f"Error: {SAME}\n")


def test_without_a_disabled_filter_the_same_account_logs_in(
    auth_slapd: SlapdServer, tmp_path: Path
) -> None:
    workspace = make_repo(tmp_path, [auth_slapd.ldap_url], auth_slapd.ca_file)
    spec_file = workspace.inventory_dir / f"{DOMAIN}.yaml"
    spec = json.loads(spec_file.read_text())
    spec["users"]["disabled_filter"] = None
    spec_file.write_text(json.dumps(spec))
    assert login(workspace, "dave", "Dave-pw-1").address == "dave@example.com"


@pytest.mark.parametrize(
    "user", ["erin", "frank"], ids=["not-in-the-state", "deactivated-in-the-state"]
)
def test_a_user_who_is_not_an_active_recipient_is_refused(
    auth_slapd: SlapdServer, workspace: Workspace, tmp_path: Path, user: str
) -> None:
    password = f"{user.title()}-pw-1"
    error = refused(workspace, user, password)
    assert (str(error), error.reason) == (SAME, "not an active recipient")

    relaxed = make_repo(
        tmp_path / "relaxed", [auth_slapd.ldap_url], auth_slapd.ca_file, require_recipient=False
    )
    assert login(relaxed, user, password).address == f"{user}@example.com"
    assert refused(relaxed, user, "wrong-1").reason == "wrong password"


def test_without_a_state_file_nobody_is_a_recipient(workspace: Workspace) -> None:
    (workspace.state_dir / f"{DOMAIN}.yaml").unlink()
    assert refused(workspace, "alice", CANARY).reason == "not an active recipient"


# --- 9-10: the guessing limit --------------------------------------------------------------------


def test_after_max_failures_attempts_fail_unasked_until_the_window_passes(
    auth_slapd: SlapdServer, workspace: Workspace
) -> None:
    clock = Clock()
    for _ in range(5):
        assert refused(workspace, "alice", WRONG_CANARY, clock=clock).reason == "wrong password"
        clock.now += 60
    reasons: list[str] = []

    def attempt() -> None:
        with pytest.raises(LoginFailed) as error:
            login(workspace, "alice", CANARY, clock=clock)  # even the right password
        reasons.append(error.value.reason)

    text = server_log(auth_slapd, attempt)
    assert (reasons, connections(text)) == (["too many failures"], 0)
    # Other spellings of the same name are the same account.
    for spelling in ("ALICE", " alice ", "Alice"):
        assert refused(workspace, spelling, CANARY, clock=clock).reason == "too many failures"
    assert login(workspace, "bob", "Bob-pw-1", clock=clock).address == "bob@example.com"
    failures = json.loads((workspace.repo_dir / ".git" / FAILURE_FILE).read_text())
    assert list(failures["failures"]) == [f"{DOMAIN} alice"]
    assert CANARY not in json.dumps(failures) and WRONG_CANARY not in json.dumps(failures)

    # The window slides: 15 minutes after the first failure one more try is allowed …
    clock.now += 15 * 60 - 5 * 60 + 1
    assert refused(workspace, "alice", WRONG_CANARY, clock=clock).reason == "wrong password"
    assert refused(workspace, "alice", CANARY, clock=clock).reason == "too many failures"
    # … and once the window has passed for every failure, the right password works and
    # clears the count.
    clock.now += 15 * 60 + 1
    assert login(workspace, "alice", CANARY, clock=clock).dn == dn_of("alice")
    assert json.loads((workspace.repo_dir / ".git" / FAILURE_FILE).read_text())["failures"] == {}


def test_the_limit_counts_disabled_and_unknown_users_too(workspace: Workspace) -> None:
    clock = Clock()
    for user, password in (("dave", "Dave-pw-1"), ("ghost", "x1")):
        for _ in range(5):
            refused(workspace, user, password, clock=clock)
        assert refused(workspace, user, password, clock=clock).reason == "too many failures"


def test_the_limit_and_window_come_from_the_spec(auth_slapd: SlapdServer, tmp_path: Path) -> None:
    counter = tmp_path / "var" / "failures.json"
    workspace = make_repo(
        tmp_path,
        [auth_slapd.ldap_url],
        auth_slapd.ca_file,
        max_failures=2,
        failure_window="30s",
        failure_file=str(counter),
    )
    clock = Clock()
    refused(workspace, "bob", "no-1", clock=clock)
    refused(workspace, "bob", "no-2", clock=clock)
    assert refused(workspace, "bob", "Bob-pw-1", clock=clock).reason == "too many failures"
    assert counter.is_file() and oct(counter.stat().st_mode & 0o777) == "0o600"
    assert not (workspace.repo_dir / ".git" / FAILURE_FILE).exists()
    clock.now += 31
    assert login(workspace, "bob", "Bob-pw-1", clock=clock).address == "bob@example.com"


def test_concurrent_guesses_cannot_exceed_the_limit(
    auth_slapd: SlapdServer, workspace: Workspace
) -> None:
    """Twelve guesses at once: each attempt is counted before the directory is asked, under
    the counter's file lock, so only five of them reach the directory."""
    outcomes: list[str] = []
    start = threading.Barrier(12)

    def guess(n: int) -> None:
        start.wait()
        try:
            login(workspace, "bob", f"guess-{n}")
        except LoginFailed as exc:
            outcomes.append(exc.reason)

    def attack() -> None:
        threads = [threading.Thread(target=guess, args=(n,)) for n in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    text = server_log(auth_slapd, attack)
    assert sorted(outcomes) == ["too many failures"] * 7 + ["wrong password"] * 5
    assert binds(text).count(dn_of("bob")) == 5


def test_an_unreadable_counter_refuses_logins(workspace: Workspace) -> None:
    counter = workspace.repo_dir / ".git" / FAILURE_FILE
    counter.write_text("{not json", encoding="utf-8")
    with pytest.raises(Exception, match="the failed-login counter is unreadable") as raised:
        login(workspace, "alice", CANARY)
    assert "delete the file to reset every count" in str(raised.value)


# --- 11: the directory cannot answer -------------------------------------------------------------


def test_an_unreachable_directory_is_an_error_and_not_a_failure(
    auth_slapd: SlapdServer, tmp_path: Path
) -> None:
    dead = f"ldap://127.0.0.1:{free_port()}"
    workspace = make_repo(tmp_path, [dead], auth_slapd.ca_file)
    for _ in range(7):
        with pytest.raises(DirectoryError, match="no directory server could check the password"):
            login(workspace, "alice", CANARY)
    failures = json.loads((workspace.repo_dir / ".git" / FAILURE_FILE).read_text())
    assert failures["failures"] == {}  # seven tries, none counted
    result = cli(workspace, "auth", DOMAIN, "alice", password=CANARY)
    assert result.exit_code == 1
    assert f"{dead}: socket connection error while opening" in result.stderr


def test_failover_to_the_next_server(auth_slapd: SlapdServer, tmp_path: Path) -> None:
    dead = f"ldap://127.0.0.1:{free_port()}"
    workspace = make_repo(tmp_path, [dead, auth_slapd.ldap_url], auth_slapd.ca_file)
    assert login(workspace, "alice", CANARY).server == auth_slapd.ldap_url


def test_a_wrong_service_password_is_a_config_error(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_VAR, "not-the-reader-password")
    with pytest.raises(DirectoryError, match=f"bind as '{READER_DN}' refused"):
        login(workspace, "alice", CANARY)


def test_an_ldif_spec_cannot_check_passwords(tmp_path: Path) -> None:
    inventory = tmp_path / "inventories"
    inventory.mkdir()
    (inventory / "data.ldif").write_text("", encoding="utf-8")
    (inventory / f"{DOMAIN}.yaml").write_text(
        f"domain: {DOMAIN}\ndirectory:\n  ldif: data.ldif\n", encoding="utf-8"
    )
    workspace = Workspace(inventory, tmp_path / "state", tmp_path)
    with pytest.raises(ConfigError, match=r"checking passwords needs directory\.servers"):
        login(workspace, "alice", CANARY)


# --- 12: the password stays secret ---------------------------------------------------------------


OWN_FRAMES = (Path(reconciler.__file__).parent, Path(ldap3.__file__).parent)


def all_frames_text(exc: BaseException) -> str:
    """The traceback and the repr of every local of reconciler's and ldap3's frames in it, the
    chained exceptions' included (what a crash reporter may keep). The test runner's frames
    are left out: CliRunner holds the test's stdin, password and all."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for frame, _ in traceback.walk_tb(current.__traceback__):
            if not Path(frame.f_code.co_filename).is_relative_to(OWN_FRAMES[0]) and not Path(
                frame.f_code.co_filename
            ).is_relative_to(OWN_FRAMES[1]):
                continue
            texts += [f"{name} = {value!r}" for name, value in frame.f_locals.items()]
            for value in frame.f_locals.values():
                if hasattr(value, "__dict__"):
                    texts.append(repr(vars(value)))
        current = current.__context__ or current.__cause__
    return "\n".join(texts)


def assert_no_password(*texts: str) -> None:
    for text in texts:
        for secret in (CANARY, WRONG_CANARY):
            assert secret not in text, f"a password leaked into: {text[:300]!r}…"


def test_the_password_appears_nowhere(
    auth_slapd: SlapdServer, workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="reconciler")
    texts: list[str] = []
    for password in (CANARY, WRONG_CANARY):
        for user in ("alice", "nobody", "dave"):
            for flags in ([], ["-v"]):
                result = cli(workspace, "auth", DOMAIN, user, *flags, password=password)
                texts += [result.stdout, result.stderr]
            debug = cli(workspace, "auth", DOMAIN, user, "--debug", "-v", password=password)
            if debug.exception is not None and not isinstance(debug.exception, SystemExit):
                texts.append(all_frames_text(debug.exception))
    assert any("Traceback" in t for t in texts)  # --debug did show tracebacks
    for user in ("nobody", "alice"):
        with pytest.raises(LoginFailed) as raised:
            authenticate(workspace, DOMAIN, user, WRONG_CANARY)  # a plain str from the caller
        texts += [all_frames_text(raised.value), repr(raised.value)]
    texts += [r.getMessage() for r in caplog.records]
    texts.append((workspace.repo_dir / ".git" / FAILURE_FILE).read_text())
    assert_no_password(*texts)


def test_ldap3_forgets_the_password_after_the_bind(auth_slapd: SlapdServer) -> None:
    (spec,) = load_specs_for(auth_slapd)
    server = parse_server_url(auth_slapd.ldap_url, "starttls")
    connection = bind(spec.directory, server, dn_of("alice"), CANARY.encode())
    try:
        texts = [repr(connection), str(connection), repr(vars(connection))]
        texts += [repr(vars(connection.strategy)), repr(connection.server)]
        assert connection.bound
    finally:
        connection.unbind()
    assert_no_password(*texts)


def load_specs_for(server: SlapdServer) -> list[Any]:
    root = Path(server.directory) / "spec-for-bind"
    inventory = root / "inventories"
    inventory.mkdir(parents=True, exist_ok=True)
    (inventory / "ca.pem").write_bytes(server.ca_file.read_bytes())
    (inventory / f"{DOMAIN}.yaml").write_text(
        f"domain: {DOMAIN}\ndirectory:\n  servers: [{server.ldap_url}]\n  ca_file: ca.pem\n",
        encoding="utf-8",
    )
    return load_specs(inventory)


# --- 13: Active Directory's UPN and DOMAIN\user ------------------------------------------------

AD_ACCOUNTS = {
    **{f"{u}@example.com": dn_of(u) for u in ("alice", "bob", "dave", "erin")},
    **{f"EXAMPLE\\{u}": dn_of(u) for u in ("alice", "bob", "dave", "erin")},
}


@pytest.fixture
def ad_front(auth_slapd: SlapdServer) -> Iterator[AdFront]:
    with AdFront(auth_slapd, AD_ACCOUNTS) as front:
        yield front


def ad_workspace(root: Path, front: AdFront, slapd: SlapdServer, **auth: Any) -> Workspace:
    """The active_directory flavor over StartTLS to the AD-like front; no service account."""
    workspace = make_repo(root, [front.url], slapd.ca_file, **auth)
    spec_file = workspace.inventory_dir / f"{DOMAIN}.yaml"
    spec = json.loads(spec_file.read_text())
    spec["directory"]["flavor"] = "active_directory"
    for key in ("bind_dn", "password"):
        del spec["directory"][key]
    del spec["users"]  # the flavor's: AD's filter and userAccountControl bit 2
    spec_file.write_text(json.dumps(spec))
    commit_all(workspace.repo_dir, "Active Directory")
    return workspace


@pytest.mark.parametrize(
    ("typed", "bound_as"),
    [
        ("alice", "alice@example.com"),  # a bare name gets the UPN suffix (the domain)
        ("alice@example.com", "alice@example.com"),
        ("Alice@Example.COM", "Alice@Example.COM"),
        ("EXAMPLE\\alice", "EXAMPLE\\alice"),
    ],
)
def test_active_directory_binds_with_the_upn_or_domain_user(
    auth_slapd: SlapdServer, ad_front: AdFront, tmp_path: Path, typed: str, bound_as: str
) -> None:
    workspace = ad_workspace(tmp_path, ad_front, auth_slapd)
    found = login(workspace, typed, CANARY)
    assert (found.dn, found.address) == (dn_of("alice"), "alice@example.com")
    assert ad_front.bind_names == [(bound_as, True)]  # one bind, the user's, after StartTLS
    assert refused(workspace, typed, WRONG_CANARY).reason == "wrong password"


def test_active_directory_refusals(
    auth_slapd: SlapdServer, ad_front: AdFront, tmp_path: Path
) -> None:
    workspace = ad_workspace(tmp_path, ad_front, auth_slapd)
    # AD says invalidCredentials for an unknown account too: the same answer.
    assert refused(workspace, "nobody", CANARY).reason == "wrong password"
    assert refused(workspace, "EXAMPLE\\dave", "Dave-pw-1").reason == "account disabled"
    assert refused(workspace, "erin", "Erin-pw-1").reason == "not an active recipient"
    bad = refused(workspace, "EXAMPLE\\", CANARY)
    assert str(bad) == "login refused: a user name with a backslash must be DOMAIN\\user"
    assert ("EXAMPLE\\", True) not in ad_front.bind_names


def test_active_directory_spellings_share_one_failure_count(
    auth_slapd: SlapdServer, ad_front: AdFront, tmp_path: Path
) -> None:
    workspace = ad_workspace(tmp_path, ad_front, auth_slapd, max_failures=3)
    clock = Clock()
    for typed in ("bob", "BOB@example.com", "EXAMPLE\\Bob"):
        assert refused(workspace, typed, "nope-1", clock=clock).reason == "wrong password"
    assert refused(workspace, "bob@EXAMPLE.com", "Bob-pw-1", clock=clock).reason == (
        "too many failures"
    )
    assert len(ad_front.bind_names) == 3


def test_active_directory_mode_against_a_server_that_is_not_ad(
    auth_slapd: SlapdServer, tmp_path: Path
) -> None:
    """slapd itself refuses a UPN as bind name (invalidDNSyntax): a spec error, said so."""
    workspace = make_repo(
        tmp_path, [auth_slapd.ldap_url], auth_slapd.ca_file, mode="active_directory"
    )
    with pytest.raises(DirectoryError, match="does not accept a UPN as a bind name") as raised:
        login(workspace, "alice", CANARY)
    assert "set auth.mode: ldap" in str(raised.value)


def test_counter_keys() -> None:
    [spec] = load_specs(Path(reconciler.__file__).parent.parent / "inventories", [DOMAIN])
    assert spec.auth.mode == "active_directory"  # the demo's flavor
    assert {counter_key(spec, n) for n in ("bob", " Bob ", "BOB@example.com", "EX\\bob")} == {"bob"}
    assert counter_key(spec, "bob@elsewhere.example") == "bob@elsewhere.example"


# --- 14: the prompt on a terminal ----------------------------------------------------------------


def test_on_a_terminal_the_password_is_prompted_without_echo(workspace: Workspace) -> None:
    """The real command in a pseudo-terminal, as a person at a shell runs it."""
    typed: list[bytes] = []

    def respond(seen: bytes) -> bytes | None:
        # "Password:" and then getpass's " ", written once echo is off: type then.
        if not typed and b"Password: " in seen:
            typed.append(CANARY.encode() + b"\n")
            return typed[0]
        return None

    args = ["auth", DOMAIN, "alice", "--repo", str(workspace.repo_dir)]
    code, seen = run_in_terminal(args, respond=respond)
    output = seen.decode(errors="replace")
    assert typed, output
    assert code == 0, output
    assert output.startswith("Password: ")
    assert CANARY not in output  # not echoed
    assert output.splitlines()[-1] == "alice@example.com"


# --- 15: the spec's transport ------------------------------------------------------------------


def test_an_untrusted_certificate_stops_the_login_before_the_password_is_sent(
    auth_slapd: SlapdServer, tmp_path: Path
) -> None:
    other = make_ca(tmp_path / "other-ca", "other-ca")
    workspace = make_repo(tmp_path, [auth_slapd.ldap_url], other)
    errors: list[DirectoryError] = []

    def attempt() -> None:
        with pytest.raises(DirectoryError) as raised:
            login(workspace, "alice", CANARY)
        errors.append(raised.value)

    text = server_log(auth_slapd, attempt)
    assert "StartTLS failed" in errors[0].message
    assert "certificate verify failed" in errors[0].message
    assert "not falling back to an unencrypted connection" in errors[0].message
    assert binds(text) == []


def test_ldaps_works_too_and_unverified_certificates_are_warned_about(
    auth_slapd: SlapdServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    workspace = make_repo(tmp_path, [auth_slapd.ldaps_url], auth_slapd.ca_file)
    assert login(workspace, "alice", CANARY).server == auth_slapd.ldaps_url

    spec_file = workspace.inventory_dir / f"{DOMAIN}.yaml"
    spec = json.loads(spec_file.read_text())
    spec["directory"]["verify_certificate"] = False
    spec_file.write_text(json.dumps(spec))
    assert login(workspace, "alice", CANARY).address == "alice@example.com"
    assert any(
        "directory.verify_certificate is false" in r.getMessage() and r.levelno == logging.WARNING
        for r in caplog.records
    )


def test_without_base_dn_the_servers_naming_context_is_searched(
    auth_slapd: SlapdServer, workspace: Workspace
) -> None:
    spec_file = workspace.inventory_dir / f"{DOMAIN}.yaml"
    spec = json.loads(spec_file.read_text())
    del spec["directory"]["base_dn"]
    spec_file.write_text(json.dumps(spec))
    assert login(workspace, "alice", CANARY).dn == dn_of("alice")
    assert refused(workspace, "nobody", CANARY).reason == "unknown user"
