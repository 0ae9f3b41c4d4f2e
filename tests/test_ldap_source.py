"""Live LDAP end to end: spec → LdapSource → mapping → plan, against real slapd servers (no mocks).

The rule under test (reconciler/ldap_source.py): a read is used only when it is complete and
came over the transport the spec asks for. Every failure is exit 1 with a message that names
the server and what went wrong, and nothing is applied from it.

Read-only cases use the session ``slapd`` (SAMPLE_LDIF); anything with other data or limits has
a private server below, one fixture per kind. Misbehaving networks come from tests/tcpproxy.py.
The bind user is READER_DN: the rootdn would bypass the size limits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import socket
import ssl
import subprocess
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE_LDIF, require_slapd_tools
from gitrepo import commit_all, git, head, init_repo, invoke, isolate_git
from hypothesis import given
from hypothesis import strategies as st
from slapd import BASE_DN, READER_DN, READER_PASSWORD, SlapdServer, find_tool, free_port, make_ca
from tcpproxy import (
    BIND_REQUEST,
    BLACKHOLE,
    CORRUPT,
    EXTENDED_REQUEST,
    RESET,
    STALL,
    STRIPTLS,
    TRAILING,
    TcpProxy,
)
from typer.testing import Result

import reconciler
from reconciler.directory import ReadInterrupted, open_source
from reconciler.errors import DirectoryError
from reconciler.inventory import load_specs
from reconciler.mapping import MappingResult
from reconciler.recipient import Recipient
from reconciler.reconcile import read_directory
from reconciler.spec import DomainSpec

pytestmark = [
    pytest.mark.slapd,
]

DOMAIN = "example.com"
PASSWORD_VAR = "RECONCILER_TEST_BIND_PASSWORD"
PEOPLE = f"ou=People,{BASE_DN}"
USERS_FILTER = "(&(objectClass=inetOrgPerson)(mail=*))"  # the openldap flavor's

# What SAMPLE_LDIF gives with the spec write_spec() writes: the inetOrgPerson entries' mail
# as mailboxes and dave's "smtp:" proxyAddress as an alias (his X500: value is not mail).
SAMPLE_PLAN = [
    '  + alice@example.com  mailbox "Alice Archer"',
    '  + bob@example.com  mailbox "Bob Baker"',
    '  + carol@example.com  mailbox "Carol Carter"',
    "  + d.disabled@example.com  alias → dave@example.com",
    '  + dave@example.com  mailbox "Dave Disabled"',
    "example.com: 5 to add, 0 to update, 0 to remove (0 → 5 recipients)",
    "Plan: 5 to add, 0 to update, 0 to remove in 1 of 1 domain.",
]
SAMPLE_ADDRESSES = [
    "alice@example.com",
    "bob@example.com",
    "carol@example.com",
    "d.disabled@example.com",
    "dave@example.com",
]

# Passwords that must never show up in any output, file, commit or repr.
CANARY = "Canary-7f3b-not-for-logs"  # the right password of canary_slapd's rootdn
WRONG_CANARY = "Canary-wrong-91c4-not-for-logs"


@pytest.fixture(autouse=True, params=["fast", "ldap3"])
def _environment(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    isolate_git(monkeypatch)
    # Every case runs on both read paths: our decoder (ldapwire) and ldap3's own.
    monkeypatch.setenv("RECONCILER_LDAP_DECODER", request.param)
    monkeypatch.setenv(PASSWORD_VAR, READER_PASSWORD)
    # The CLI (other test modules') leaves the "reconciler" logger writing to a closed stream
    # and not propagating: direct calls would log into the void.
    logger = logging.getLogger("reconciler")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)


# --- servers ---------------------------------------------------------------------------------


def users_ldif(count: int) -> str:
    """ou=People with ``count`` users user000 … each with mail user000@example.com."""
    return f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: People\n\n" + "".join(
        f"dn: uid=user{i:03},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: user{i:03}\n"
        f"cn: User {i:03}\nsn: {i}\nmail: user{i:03}@example.com\n\n"
        for i in range(count)
    )


def user_addresses(count: int) -> list[str]:
    return [f"user{i:03}@example.com" for i in range(count)]


def private_slapd(
    factory: pytest.TempPathFactory, name: str, ldif: str, **options: Any
) -> Iterator[SlapdServer]:
    require_slapd_tools()
    server = SlapdServer(factory.mktemp(name), **options)
    server.load_ldif(ldif)
    with server:
        yield server


@pytest.fixture(scope="module")
def logged_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    """SAMPLE_LDIF, logging every operation (slapd -d stats) so a test can see the binds."""
    yield from private_slapd(tmp_path_factory, "logged", SAMPLE_LDIF, debug="stats")


@pytest.fixture(scope="module")
def canary_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    """SAMPLE_LDIF; the rootdn's password is CANARY (bind as ``bind_dn`` to use it)."""
    yield from private_slapd(tmp_path_factory, "canary", SAMPLE_LDIF, password=CANARY)


@pytest.fixture(scope="module")
def size_limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    """15 users; at most 10 entries per search for READER_DN, paged or not."""
    yield from private_slapd(tmp_path_factory, "size", users_ldif(15), sizelimit="10")


@pytest.fixture(scope="module")
def page_limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    """15 users; 10 per plain search, but any number in pages of at most 5."""
    limit = "size.soft=10 size.hard=10 size.pr=5 size.prtotal=unlimited"
    yield from private_slapd(tmp_path_factory, "pages", users_ldif(15), sizelimit=limit)


@pytest.fixture(scope="module")
def big_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    """200 users: ten pages of 20."""
    yield from private_slapd(tmp_path_factory, "big", users_ldif(200))


REFERRAL = "ldap://elsewhere.example/ou=Far,dc=example,dc=com"


@pytest.fixture(scope="module")
def referral_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    """SAMPLE_LDIF plus a referral object under the base (slapadd: no ManageDsaIT needed)."""
    far = (
        f"dn: ou=Far,{BASE_DN}\nobjectClass: referral\nobjectClass: extensibleObject\n"
        f"ou: Far\nref: {REFERRAL}\n"
    )
    yield from private_slapd(tmp_path_factory, "referral", SAMPLE_LDIF + "\n" + far)


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that signed none of the servers' certificates."""
    return make_ca(tmp_path_factory.mktemp("other-ca"), "other-ca")


# --- specs, runs and checks ------------------------------------------------------------------


def write_spec(inventory: Path, servers: Sequence[str], **directory: Any) -> Path:
    """inventory/example.com.yaml reading ``servers`` as READER_DN (password in PASSWORD_VAR).

    ``directory`` adds or overrides directory keys; a None value leaves the key out. Values
    are written as JSON, which is YAML too.
    """
    keys = {
        "flavor": "openldap",
        "servers": list(servers),
        "bind_dn": READER_DN,
        "password": {"env": PASSWORD_VAR},
        **directory,
    }
    text = f"domain: {DOMAIN}\ndirectory:\n"
    text += "".join(f"  {k}: {json.dumps(v)}\n" for k, v in keys.items() if v is not None)
    text += 'users:\n  alias_attributes: ["proxyAddresses"]\n'
    inventory.mkdir(parents=True, exist_ok=True)
    path = inventory / f"{DOMAIN}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def workspace(root: Path, servers: Sequence[str], **directory: Any) -> Path:
    """``root`` with inventories/example.com.yaml (not a Git repository: for plan and
    test-connection, which write nothing)."""
    write_spec(root / "inventories", servers, **directory)
    return root


def gitops(root: Path, servers: Sequence[str], **directory: Any) -> Path:
    """A Git repository with the spec committed, ready for `apply`."""
    repo = init_repo(root / "gitops")
    write_spec(repo / "inventories", servers, **directory)
    commit_all(repo, "Inventory")
    return repo


def copy_ca(ca_file: Path, root: Path, name: str = "ca.pem") -> str:
    """Copy a CA certificate into the inventory; returns the spec's ``ca_file`` value."""
    (root / "inventories").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca_file, root / "inventories" / name)
    return name


def run(root: Path, *args: str) -> Result:
    """``reconciler ARGS --repo ROOT`` in-process. The CLI points the "reconciler" logger at
    its own stderr; put it back afterwards so that direct calls log where caplog sees them."""
    logger = logging.getLogger("reconciler")
    handlers, propagate, level = logger.handlers[:], logger.propagate, logger.level
    try:
        return invoke(*args, "--repo", str(root))
    finally:
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)


def load_spec(root: Path) -> DomainSpec:
    (spec,) = load_specs(root / "inventories", [DOMAIN])
    return spec


def assert_fails(result: Result, *fragments: str) -> str:
    """Exit 1, nothing on stdout, an ``Error: …`` (after any warnings) naming every fragment,
    no traceback; returns the error text."""
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "Error: " in result.stderr, result.stderr
    error = result.stderr[result.stderr.index("Error: ") :]
    for fragment in fragments:
        assert fragment in error, f"{fragment!r} not in {error!r}"
    return error


def facts(result: Result) -> dict[str, str]:
    """The ``key: value`` lines of `test-connection` (not the indented recipient lines)."""
    assert result.exit_code == 0, result.output
    pairs = [line.split(":", 1) for line in result.stdout.splitlines() if not line[:1].isspace()]
    return {key: value.strip() for key, value in pairs}


def listed(result: Result) -> list[str]:
    """The indented lines of stdout: plan changes, or test-connection's first recipients."""
    return [line for line in result.stdout.splitlines() if line.startswith("  ")]


def addresses(result: MappingResult) -> list[str]:
    return sorted(result.recipients)


@pytest.fixture
def reconciler_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """What direct calls (not CLI runs) log, debug messages included."""
    caplog.set_level(logging.DEBUG, logger="reconciler")
    return caplog


# --- 1-3: the three transports ---------------------------------------------------------------


def test_plain_ldap_read_as_the_reader(slapd: SlapdServer, tmp_path: Path) -> None:
    root = workspace(tmp_path, [slapd.ldap_url], tls="none")
    result = run(root, "plan")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{DOMAIN}  (LDAP {slapd.ldap_url}: 4 matching entries)",
        *SAMPLE_PLAN,
    ]
    assert result.stderr == ""

    source, mapped = read_directory(load_spec(root))
    assert addresses(mapped) == SAMPLE_ADDRESSES
    assert mapped.entries_read == 4  # the Staff group is not an inetOrgPerson
    alice = mapped.recipients["alice@example.com"]
    assert (alice.kind, alice.name, alice.status) == ("mailbox", "Alice Archer", "active")
    assert alice.id and len(alice.id) == 36  # entryUUID, the openldap flavor's id
    assert mapped.recipients["d.disabled@example.com"] == Recipient(
        kind="alias", target="dave@example.com"
    )
    assert source.describe() == f"LDAP {slapd.ldap_url}"


def test_starttls_is_the_default_and_verifies_with_ca_file(
    slapd: SlapdServer, tmp_path: Path
) -> None:
    root = workspace(tmp_path, [slapd.ldap_url], ca_file=copy_ca(slapd.ca_file, tmp_path))
    result = run(root, "test-connection", DOMAIN)
    assert facts(result) == {
        "server": slapd.ldap_url,
        "tls": "StartTLS, certificate verified",
        "bound as": READER_DN,
        "base DN": BASE_DN,
        "entries": "4 matching the users filter",
        "recipients": "5 (the first ones:)",
    }
    assert [line.split()[0] for line in listed(result)] == SAMPLE_ADDRESSES
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("scheme", "tls"),
    [
        pytest.param("ldaps", None, id="ldaps-url-implies-tls"),
        pytest.param("ldap", "ldaps", id="tls-ldaps-on-an-ldap-url"),
    ],
)
def test_ldaps(slapd: SlapdServer, tmp_path: Path, scheme: str, tls: str | None) -> None:
    url = f"{scheme}://127.0.0.1:{slapd.ldaps_port}"
    root = workspace(tmp_path, [url], tls=tls, ca_file=copy_ca(slapd.ca_file, tmp_path))
    result = run(root, "test-connection", DOMAIN)
    found = facts(result)
    assert (found["server"], found["tls"]) == (url, "LDAPS, certificate verified")
    assert found["recipients"] == "5 (the first ones:)"

    plan = run(root, "plan")
    assert plan.exit_code == 0, plan.output
    assert plan.stdout.splitlines()[1:] == SAMPLE_PLAN


# --- 4-5: certificates and StartTLS are never optional ---------------------------------------


@pytest.mark.parametrize("trust", ["system-cas", "other-ca"])
@pytest.mark.parametrize("transport", ["starttls", "ldaps"])
def test_an_untrusted_certificate_is_refused(
    slapd: SlapdServer, other_ca: Path, tmp_path: Path, transport: str, trust: str
) -> None:
    url = slapd.ldap_url if transport == "starttls" else slapd.ldaps_url
    ca_file = copy_ca(other_ca, tmp_path) if trust == "other-ca" else None
    root = workspace(tmp_path, [url], ca_file=ca_file)
    error = assert_fails(
        run(root, "plan"),
        "no directory server could be read completely",
        url,
        "CERTIFICATE_VERIFY_FAILED",
        "certificate verify failed",
        "nothing was applied",
    )
    if transport == "starttls":
        assert "StartTLS failed" in error
        assert "not falling back to an unencrypted connection" in error
    assert "('" not in error  # ldap3's nested tuple reprs are unwrapped


@pytest.mark.parametrize("transport", ["starttls", "ldaps"])
def test_a_trusted_certificate_for_another_host_name_is_refused(
    slapd: SlapdServer, tmp_path: Path, transport: str
) -> None:
    # 127.1 is 127.0.0.1 to the resolver, but not a name the certificate (IP:127.0.0.1,
    # DNS:localhost) is for: the chain verifies, the host name check must still refuse it.
    port = slapd.port if transport == "starttls" else slapd.ldaps_port
    url = f"{'ldap' if transport == 'starttls' else 'ldaps'}://127.1:{port}"
    root = workspace(tmp_path, [url], ca_file=copy_ca(slapd.ca_file, tmp_path))
    error = assert_fails(
        run(root, "plan"),
        "no directory server could be read completely",
        url,
        "Hostname mismatch, certificate is not valid for '127.1'",
        "nothing was applied",
    )
    assert "subjectAltName" not in error  # the reason, not the whole certificate
    if transport == "starttls":
        assert "not falling back to an unencrypted connection" in error


@pytest.mark.parametrize("transport", ["starttls", "ldaps"])
def test_verify_certificate_false_works_and_warns_on_every_run(
    slapd: SlapdServer, tmp_path: Path, transport: str
) -> None:
    url = slapd.ldap_url if transport == "starttls" else slapd.ldaps_url
    root = workspace(tmp_path, [url], verify_certificate=False)
    warning = (
        f"{root / 'inventories' / 'example.com.yaml'}: directory.verify_certificate is false: "
        "the server's identity is not checked, and the bind password could be sent to an impostor"
    )
    for args in (["plan"], ["plan"], ["plan", "-q"], ["test-connection", DOMAIN]):
        result = run(root, *args)
        assert result.exit_code == 0, result.output
        assert result.stderr.splitlines() == [warning], args
    assert result.stdout.splitlines()[1] == (
        f"tls:        {'StartTLS' if transport == 'starttls' else 'LDAPS'}, "
        "certificate NOT verified (verify_certificate: false)"
    )
    plan = run(root, "plan")
    assert plan.stdout.splitlines()[1:] == SAMPLE_PLAN


@pytest.mark.parametrize("transport", ["starttls", "ldaps"])
def test_a_server_named_as_in_its_certificate_verifies_by_name(
    slapd: SlapdServer, tmp_path: Path, transport: str
) -> None:
    # localhost is a DNS name of the certificate (127.0.0.1 its address): the handshake's
    # check matches host names as names, not only addresses.
    port = slapd.port if transport == "starttls" else slapd.ldaps_port
    url = f"{'ldap' if transport == 'starttls' else 'ldaps'}://localhost:{port}"
    root = workspace(tmp_path, [url], ca_file=copy_ca(slapd.ca_file, tmp_path))
    found = facts(run(root, "test-connection", DOMAIN))
    kind = "StartTLS" if transport == "starttls" else "LDAPS"
    assert (found["server"], found["tls"]) == (url, f"{kind}, certificate verified")
    assert found["recipients"] == "5 (the first ones:)"


@pytest.mark.parametrize("transport", ["starttls", "ldaps"])
def test_without_ca_file_the_system_certificate_authorities_are_trusted(
    slapd: SlapdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    # OpenSSL's default verify paths follow SSL_CERT_FILE: here, the system trusts the test CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(slapd.ca_file))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))
    url = slapd.ldap_url if transport == "starttls" else slapd.ldaps_url
    root = workspace(tmp_path, [url])
    found = facts(run(root, "test-connection", DOMAIN))
    kind = "StartTLS" if transport == "starttls" else "LDAPS"
    assert found["tls"] == f"{kind}, certificate verified"


class _TlsListener:
    """A TLS server on 127.0.0.1 that completes handshakes, notes the SNI name each client
    sent (None when it sent none) and closes: the client's LDAP then fails."""

    def __init__(self, directory: Path) -> None:
        from slapd import make_server_cert

        cert, key = make_server_cert(directory, make_ca(directory))
        self.ca_file = directory / "ca.pem"
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.names: list[str | None] = []
        self.context.sni_callback = lambda _sock, name, _ctx: self.names.append(name)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            client.settimeout(5)
            with contextlib.suppress(OSError), self.context.wrap_socket(client, server_side=True):
                pass

    def __enter__(self) -> _TlsListener:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


@pytest.mark.parametrize("verify", [True, False])
def test_the_host_name_is_sent_as_sni_and_an_address_never_is(tmp_path: Path, verify: bool) -> None:
    with _TlsListener(tmp_path / "tls") as server:
        for host in ("localhost", "127.0.0.1"):
            url = f"ldaps://{host}:{server.port}"
            ca_file = copy_ca(server.ca_file, tmp_path / host) if verify else None
            root = workspace(tmp_path / host, [url], ca_file=ca_file, verify_certificate=verify)
            assert_fails(run(root, "test-connection", DOMAIN), url)
    # (RFC 6066 3: a literal IP address is not permitted in the server name)
    assert server.names == ["localhost", None]


def test_starttls_refused_by_the_server_never_falls_back_to_plain(
    slapd: SlapdServer, tmp_path: Path
) -> None:
    """A man in the middle answers StartTLS with an error; the bind must not follow in clear."""
    with TcpProxy(("127.0.0.1", slapd.port), STRIPTLS) as proxy:
        root = workspace(tmp_path, [proxy.url], ca_file=copy_ca(slapd.ca_file, tmp_path))
        assert_fails(
            run(root, "plan"),
            f"{proxy.url}: StartTLS failed (protocolError); "
            "not falling back to an unencrypted connection",
        )
    assert proxy.client_ops[0] == EXTENDED_REQUEST
    assert BIND_REQUEST not in proxy.client_ops  # the password never left the client


def test_starttls_to_a_tls_only_port_fails_without_a_bind(
    logged_slapd: SlapdServer, tmp_path: Path
) -> None:
    """The LDAPS port addressed as ldap://: StartTLS cannot work and nothing is sent in clear."""
    url = f"ldap://127.0.0.1:{logged_slapd.ldaps_port}"
    root = workspace(
        tmp_path, [url], tls="starttls", ca_file=copy_ca(logged_slapd.ca_file, tmp_path)
    )
    before = logged_slapd.log_file.stat().st_size
    assert_fails(
        run(root, "plan"),
        f"{url}: StartTLS failed (",
        "not falling back to an unencrypted connection",
    )
    new = ""
    deadline = time.monotonic() + 5  # slapd's worker thread logs the failure a moment later
    while "TLS negotiation failure" not in new and time.monotonic() < deadline:
        time.sleep(0.05)
        with logged_slapd.log_file.open("rb") as log:
            log.seek(before)
            new = log.read().decode(errors="replace")
    assert "TLS negotiation failure" in new
    assert " BIND " not in new


# --- 6-7: failover and servers that are down -------------------------------------------------


def test_failover_past_a_dead_server(slapd: SlapdServer, tmp_path: Path) -> None:
    dead = f"ldap://127.0.0.1:{free_port()}"
    root = workspace(tmp_path, [dead, slapd.ldap_url], tls="none")
    plan = run(root, "plan")
    assert plan.exit_code == 0, plan.output
    assert plan.stdout.splitlines() == [
        f"{DOMAIN}  (LDAP {slapd.ldap_url}: 4 matching entries)",
        *SAMPLE_PLAN,
    ]
    (warning,) = plan.stderr.splitlines()
    assert warning.startswith(f"{dead}: socket connection error while opening: ")
    assert warning.endswith("Connection refused; trying the next server")

    found = facts(run(root, "test-connection", DOMAIN))
    assert found["server"] == slapd.ldap_url
    assert found["failed over"].startswith(f"{dead} (socket connection error while opening: ")


def test_all_servers_down_names_every_server_and_returns_promptly(
    slapd: SlapdServer, tmp_path: Path
) -> None:
    """Refused, silent after the TCP handshake (StartTLS unanswered), silent in the TLS
    handshake: each costs at most about one timeout."""
    timeout = 1
    with TcpProxy(None, BLACKHOLE) as silent, TcpProxy(None, BLACKHOLE) as silent_tls:
        servers = [
            f"ldap://127.0.0.1:{free_port()}",
            silent.url,
            f"ldaps://127.0.0.1:{silent_tls.port}",
        ]
        ca_file = copy_ca(slapd.ca_file, tmp_path)
        root = workspace(tmp_path, servers, timeout=timeout, ca_file=ca_file)
        started = time.monotonic()
        result = run(root, "plan")
        elapsed = time.monotonic() - started
    assert elapsed < 3 * timeout * len(servers) + 5
    error = assert_fails(
        result,
        "no directory server could be read completely (",
        f"{servers[0]}: socket connection error while opening: ",
        f"{servers[1]}: StartTLS failed (error receiving data: timed out)",
        f"{servers[2]}: socket ssl wrapping error: ",
        "check the servers, the network and directory.timeout; nothing was applied",
    )
    assert "timed out" in error.partition(servers[2])[2]
    assert silent.connections == silent_tls.connections == 1


# --- 8: the bind password stays secret -------------------------------------------------------


def assert_no_password(*texts: str) -> None:
    for text in texts:
        for secret in (CANARY, WRONG_CANARY):
            assert secret not in text, f"a password leaked into: {text[:300]!r}…"


def reconciler_traceback(exc: BaseException) -> str:
    """The traceback, and the repr of every local of reconciler's frames in it (what a crash
    reporter keeps)."""
    package = Path(reconciler.__file__).parent
    frames = [f for f, _ in traceback.walk_tb(exc.__traceback__)]
    own = [f for f in frames if Path(f.f_code.co_filename).is_relative_to(package)]
    # Modules compiled with mypyc leave no Python frames, and so no locals, in a traceback
    # (the pure-Python run of these tests looks at the locals).
    assert own or reconciler.COMPILED.startswith("compiled"), "no reconciler frame in the traceback"
    local_reprs = [f"{name} = {value!r}" for f in own for name, value in f.f_locals.items()]
    return "".join(traceback.format_exception(exc)) + "\n".join(local_reprs)


def attributes(source: object) -> dict[str, Any]:
    """Every attribute of an object, a compiled class's (which has no __dict__) too."""
    if hasattr(source, "__dict__"):
        return dict(vars(source))
    return {name: getattr(source, name) for name in dir(source) if not name.startswith("__")}


def test_the_password_appears_nowhere_on_success(
    canary_slapd: SlapdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_VAR, CANARY)
    repo = gitops(tmp_path, [canary_slapd.ldap_url], tls="none", bind_dn=canary_slapd.bind_dn)
    outputs = []
    for args in (["plan", "-v"], ["plan", "--format", "json", "-v"], ["test-connection", DOMAIN]):
        result = run(repo, *args)
        assert result.exit_code == 0, result.output
        outputs += [result.stdout, result.stderr]
    document = json.loads(outputs[2])
    assert document["domains"][0]["source"] == f"LDAP {canary_slapd.ldap_url}: 4 matching entries"

    applied = run(repo, "apply", "-v")
    assert applied.exit_code == 0, applied.output
    assert applied.stdout.splitlines()[-1] == f"Committed {DOMAIN} as {head(repo)[:10]}"
    state = (repo / "state" / f"{DOMAIN}.yaml").read_text(encoding="utf-8")
    assert all(address in state for address in SAMPLE_ADDRESSES)
    history = git(repo, "log", "--all", "-p", "--format=%H%n%B")
    assert "Reconciler-Action: apply" in history
    assert_no_password(*outputs, applied.stdout, applied.stderr, state, history)

    source, _ = read_directory(load_spec(repo))
    assert_no_password(repr(source), str(source), repr(attributes(source)))


FAILURES = {
    "wrong-password": ({"password": WRONG_CANARY}, ["invalidCredentials", "refused"]),
    "wrong-bind-dn": ({"bind_dn": f"cn=nobody,{BASE_DN}"}, ["invalidCredentials"]),
    "unreachable": ({"servers": "dead"}, ["Connection refused"]),
    "no-such-base": ({"base_dn": f"ou=Nowhere,{BASE_DN}"}, ["noSuchObject"]),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_the_password_appears_nowhere_on_failure(
    canary_slapd: SlapdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    change, fragments = FAILURES[failure]
    monkeypatch.setenv(PASSWORD_VAR, change.get("password", CANARY))
    servers = [canary_slapd.ldap_url]
    if change.get("servers") == "dead":
        servers = [f"ldap://127.0.0.1:{free_port()}"]
    bind_dn = change.get("bind_dn", canary_slapd.bind_dn)
    repo = gitops(tmp_path, servers, tls="none", bind_dn=bind_dn, base_dn=change.get("base_dn"))
    before = head(repo)

    texts = []
    for args in (
        ["plan"],
        ["plan", "-v"],
        ["plan", "--format", "json", "-v"],
        ["test-connection", DOMAIN, "-v"],
        ["apply", "-v"],
    ):
        result = run(repo, *args)
        assert_fails(result, *fragments)
        texts += [result.stdout, result.stderr]
    assert head(repo) == before
    assert not (repo / "state").exists()

    debug = run(repo, "plan", "-v", "--debug")
    assert debug.exit_code == 1
    assert isinstance(debug.exception, DirectoryError)
    texts += [debug.stdout, debug.stderr, reconciler_traceback(debug.exception)]

    source = open_source(load_spec(repo))
    with pytest.raises(DirectoryError) as raised:
        list(source.entries())
    for fragment in fragments:
        assert fragment in str(raised.value)
    error = raised.value
    texts += [str(error), repr(error), str(error.hint), reconciler_traceback(error)]
    texts += [repr(source), str(source), repr(attributes(source)), str(source.connection_facts())]
    assert_no_password(*texts)


def test_wrong_password_is_an_error_not_a_failover(slapd: SlapdServer, tmp_path: Path) -> None:
    """invalidCredentials will not get better on the next server: stop at once."""
    with TcpProxy(None, BLACKHOLE) as never_asked:
        root = workspace(tmp_path, [slapd.ldap_url, never_asked.url], tls="none")
        with pytest.MonkeyPatch.context() as env:
            env.setenv(PASSWORD_VAR, WRONG_CANARY)
            result = run(root, "plan")
    error = assert_fails(
        result,
        f"{slapd.ldap_url}: bind as '{READER_DN}' refused: result 49 invalidCredentials",
        "check bind_dn and the password the spec points at",
    )
    assert never_asked.connections == 0
    assert_no_password(error)


# --- 9-10: the base DN -----------------------------------------------------------------------


def test_a_wrong_base_dn_is_an_error_never_an_empty_directory(
    slapd: SlapdServer, tmp_path: Path
) -> None:
    repo = gitops(tmp_path, [slapd.ldap_url], tls="none", base_dn=BASE_DN)
    assert run(repo, "apply").exit_code == 0
    state = repo / "state" / f"{DOMAIN}.yaml"
    synced = state.read_text(encoding="utf-8")

    nowhere = f"ou=Nowhere,{BASE_DN}"
    write_spec(repo / "inventories", [slapd.ldap_url], tls="none", base_dn=nowhere)
    before = commit_all(repo, "Point the base DN at nothing")
    expected = (
        f"{slapd.ldap_url}: search of '{nowhere}' ended with result 32 noSuchObject; "
        "the read is incomplete and was not used\n"
        "  check directory.base_dn: the server has no such entry"
    )
    assert_fails(run(repo, "plan"), expected)
    assert_fails(run(repo, "apply"), expected)
    assert head(repo) == before
    assert state.read_text(encoding="utf-8") == synced


def test_without_base_dn_the_naming_context_is_used(slapd: SlapdServer, tmp_path: Path) -> None:
    root = workspace(tmp_path, [slapd.ldap_url], tls="none", base_dn=None)
    assert "base_dn" not in (root / "inventories" / f"{DOMAIN}.yaml").read_text()
    found = facts(run(root, "test-connection", DOMAIN))
    assert found["base DN"] == BASE_DN
    assert found["recipients"] == "5 (the first ones:)"


# --- 11-13: reads the server cuts short ------------------------------------------------------


@pytest.mark.parametrize("page_size", [None, 5], ids=["default-pages", "pages-of-5"])
def test_a_size_limit_cut_is_an_error_and_nothing_is_applied(
    size_limited: SlapdServer, tmp_path: Path, page_size: int | None
) -> None:
    repo = gitops(tmp_path, [size_limited.ldap_url], tls="none", page_size=page_size)
    before = head(repo)
    for command in ("plan", "apply"):
        assert_fails(
            run(repo, command),
            f"{size_limited.ldap_url}: search of '{BASE_DN}' ended with result 4 "
            "sizeLimitExceeded; the read is incomplete and was not used",
            "the server's size limit cut the search",
        )
    assert head(repo) == before
    assert not (repo / "state").exists()


def test_paging_reads_past_the_size_limit(
    page_limited: SlapdServer, tmp_path: Path, reconciler_log: pytest.LogCaptureFixture
) -> None:
    root = workspace(tmp_path, [page_limited.ldap_url], tls="none", page_size=5)
    result = run(root, "plan", "-v")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{DOMAIN}  (LDAP {page_limited.ldap_url}: 15 matching entries)"
    assert listed(result) == [f'  + {a}  mailbox "User {a[4:7]}"' for a in user_addresses(15)]
    assert f"{page_limited.ldap_url}: read 3 page(s)" in result.stderr.splitlines()

    _, mapped = read_directory(load_spec(root))
    assert addresses(mapped) == user_addresses(15)
    assert mapped.entries_read == 15
    assert f"{page_limited.ldap_url}: read 3 page(s)" in reconciler_log.messages


def test_a_page_size_above_the_servers_limit_is_an_error(
    page_limited: SlapdServer, tmp_path: Path
) -> None:
    root = workspace(tmp_path, [page_limited.ldap_url], tls="none")  # 500 per page
    assert_fails(
        run(root, "plan"),
        "ended with result 11 adminLimitExceeded: illegal pagedResults page size; "
        "the read is incomplete and was not used",
    )


def test_a_referral_left_in_the_results_is_an_error(
    referral_slapd: SlapdServer, tmp_path: Path
) -> None:
    repo = gitops(tmp_path, [referral_slapd.ldap_url], tls="none")
    before = head(repo)
    for command in ("plan", "apply"):
        assert_fails(
            run(repo, command),
            f"{referral_slapd.ldap_url}: the search of '{BASE_DN}' returned a referral ({REFERRAL}",
            "the read is incomplete",
            "set base_dn to a naming context the server holds",
        )
    assert head(repo) == before
    assert not (repo / "state").exists()


# --- 14: a server that fails part-way --------------------------------------------------------

BIG = 200
PART_WAY = 6000  # bytes from the server: the bind result and two to three pages of 20


@pytest.mark.parametrize("mode", [STALL, RESET])
def test_a_server_failing_mid_search_is_an_error(
    big_slapd: SlapdServer, tmp_path: Path, mode: str
) -> None:
    timeout = 1
    with TcpProxy(("127.0.0.1", big_slapd.port), mode, after=PART_WAY) as proxy:
        root = workspace(tmp_path, [proxy.url], tls="none", page_size=20, timeout=timeout)
        started = time.monotonic()
        result = run(root, "plan")
        elapsed = time.monotonic() - started
    assert elapsed < 3 * timeout + 5
    why = "timed out" if mode == STALL else "Connection reset by peer"
    assert_fails(
        result,
        f"no directory server could be read completely ({proxy.url}: "
        "the search failed part-way: error receiving data: ",
        why,
    )
    assert f"{proxy.url}: the search failed part-way" in result.stderr.splitlines()[0]

    # The same, one entry at a time: the read really broke off part-way through.
    with TcpProxy(("127.0.0.1", big_slapd.port), mode, after=PART_WAY) as proxy:
        write_spec(root / "inventories", [proxy.url], tls="none", page_size=20, timeout=timeout)
        source = open_source(load_spec(root))
        seen = []
        # With no other server to restart on, the failure is final at once (no ReadInterrupted).
        with pytest.raises(DirectoryError, match="could be read completely") as raised:
            for entry in source.entries():
                seen.append(entry.dn)
        assert not isinstance(raised.value, ReadInterrupted)
        assert f"{proxy.url}: the search failed part-way" in raised.value.message
        assert 20 <= len(seen) < BIG


def test_an_entry_that_does_not_decode_fails_the_read_after_the_next_page_was_asked_for(
    big_slapd: SlapdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Our decoder decodes a page once the next one has been asked for: an entry of it that
    # does not decode still ends the read, and nothing is applied. (ldap3's decoder reads a
    # page whole before the next request, and is not this test's subject.)
    monkeypatch.setenv("RECONCILER_LDAP_DECODER", "fast")
    with TcpProxy(("127.0.0.1", big_slapd.port), CORRUPT, after=PART_WAY) as proxy:
        repo = gitops(tmp_path, [proxy.url], tls="none", page_size=20, timeout=5)
        before = head(repo)
        result = run(repo, "apply")
        seen = []
        with pytest.raises(DirectoryError, match="invalid LDAP response from the server"):
            for entry in open_source(load_spec(repo)).entries():
                seen.append(entry.dn)
    assert_fails(result, "invalid LDAP response from the server: ", "PartialAttribute SEQUENCE")
    assert head(repo) == before
    assert not (repo / "state").exists()
    assert 20 <= len(seen) < BIG and len(seen) % 20 == 0  # whole pages only, then the error


@pytest.mark.parametrize("mode", [STALL, RESET])
def test_a_read_broken_off_starts_again_on_the_next_server(
    big_slapd: SlapdServer, tmp_path: Path, mode: str, reconciler_log: pytest.LogCaptureFixture
) -> None:
    with TcpProxy(("127.0.0.1", big_slapd.port), mode, after=PART_WAY) as proxy:
        servers = [proxy.url, big_slapd.ldap_url]
        root = workspace(tmp_path, servers, tls="none", page_size=20, timeout=1)
        source, mapped = read_directory(load_spec(root))
    assert mapped.entries_read == BIG  # the half read from the proxy was thrown away
    assert addresses(mapped) == user_addresses(BIG)
    assert len({r.id for r in mapped.recipients.values()}) == BIG
    assert source.connection_facts()["server"] == big_slapd.ldap_url
    (restart,) = [r.message for r in reconciler_log.records if r.levelno == logging.WARNING]
    assert restart.startswith(f"{proxy.url}: the search failed part-way: ")
    assert restart.endswith("; reading again from the start on the next server")
    assert f"{big_slapd.ldap_url}: read 10 page(s)" in reconciler_log.messages

    with TcpProxy(("127.0.0.1", big_slapd.port), mode, after=PART_WAY) as proxy:
        servers = [proxy.url, big_slapd.ldap_url]
        write_spec(root / "inventories", servers, tls="none", page_size=20, timeout=1)
        result = run(root, "plan")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        f"{DOMAIN}  (LDAP {big_slapd.ldap_url}: {BIG} matching entries)"
    )
    assert len(listed(result)) == BIG
    assert "reading again from the start on the next server" in result.stderr


# --- 15: the debug output ----------------------------------------------------------------------


def test_verbose_shows_an_equivalent_ldapsearch_that_works(
    slapd: SlapdServer, tmp_path: Path
) -> None:
    ca_file = copy_ca(slapd.ca_file, tmp_path)
    root = workspace(tmp_path, [slapd.ldap_url], ca_file=ca_file)
    result = run(root, "plan", "-v")
    assert result.exit_code == 0, result.output
    assert READER_PASSWORD not in result.output
    (line,) = [x for x in result.stderr.splitlines() if "ldapsearch" in x]
    command = line.removeprefix("equivalent: ")
    words = shlex.split(command)
    assert words[:6] == ["ldapsearch", "-LLL", "-x", "-H", slapd.ldap_url, "-ZZ"]
    assert words[6:12] == ["-D", READER_DN, "-W", "-b", BASE_DN, "-s"]
    assert shlex.quote(USERS_FILTER) in command
    assert words[words.index(USERS_FILTER) + 1 :] == [
        "cn",
        "entryUUID",
        "mail",
        "proxyAddresses",
    ]

    # Run it (the password from a file instead of the -W prompt): the same four entries.
    password_file = tmp_path / "password"
    password_file.write_text(READER_PASSWORD, encoding="utf-8")
    words[0] = find_tool("ldapsearch")
    words[words.index("-W")] = f"-y{password_file}"
    # No ldap.conf or .ldaprc of whoever runs the tests (LDAPNOINIT would drop LDAPTLS_* too).
    env = {k: v for k, v in os.environ.items() if not k.startswith("LDAP")}
    env |= {"LDAPCONF": os.devnull, "HOME": str(tmp_path), "LDAPTLS_CACERT": str(slapd.ca_file)}
    done = subprocess.run(
        words, capture_output=True, text=True, env=env, cwd=tmp_path, check=False, timeout=30
    )
    assert done.returncode == 0, done.stderr
    mails = sorted(x.split(": ")[1] for x in done.stdout.splitlines() if x.startswith("mail: "))
    assert mails == [a for a in SAMPLE_ADDRESSES if a != "d.disabled@example.com"]


# --- 16: LDIF and LDAP agree -----------------------------------------------------------------

# 16 bytes that happen to be valid UTF-8 ("0123456789:;<=>?"): still a GUID, not text.
ASCII_GUID = bytes(range(0x30, 0x40))
BINARY_GUID = bytes.fromhex("112233445566778899aabbccddeeff00")
AD_LDIF = f"""\
dn: ou=Staff,{BASE_DN}
objectClass: organizationalUnit
ou: Staff

dn: cn=Erin Example,ou=Staff,{BASE_DN}
objectClass: inetOrgPerson
objectClass: user
cn: Erin Example
sn: Example
displayName: Erin Example
mail: Erin@Example.com
objectCategory: person
objectGUID:: MDEyMzQ1Njc4OTo7PD0+Pw==
proxyAddresses: SMTP:erin@example.com
proxyAddresses: smtp:e.example@example.com
proxyAddresses: smtp:erin@elsewhere.example
proxyAddresses: X500:/o=Example/ou=Exchange/cn=Recipients/cn=erin

dn: cn=Finn,ou=Staff,{BASE_DN}
objectClass: inetOrgPerson
objectClass: user
cn: Finn
sn: F
displayName:: RmlubiBGw7hyZGU=
objectCategory: person
objectGUID:: ESIzRFVmd4iZqrvM3e7/AA==
proxyAddresses: SMTP:finn@example.com
proxyAddresses: smtp:ff@example.com

dn: cn=Staff,ou=Staff,{BASE_DN}
objectClass: group
cn: Staff
mail: staff@example.com
objectCategory: group
"""


@pytest.fixture(scope="module")
def ad_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    yield from private_slapd(tmp_path_factory, "ad", AD_LDIF)


# Finn has no mail attribute: his "SMTP:" proxyAddress is the primary address.
AD_FILTER = "(&(objectCategory=person)(objectClass=user)(|(mail=*)(proxyAddresses=SMTP:*)))"


def test_ldif_and_ldap_give_the_same_recipients(ad_slapd: SlapdServer, tmp_path: Path) -> None:
    """The same entries as an export and on a server: the same recipients, ids included."""

    def spec(directory: str) -> DomainSpec:
        inventory = tmp_path / "inventories"
        inventory.mkdir(exist_ok=True)
        (inventory / f"{DOMAIN}.yaml").write_text(
            f"domain: {DOMAIN}\ndirectory:\n  flavor: active_directory\n  base_dn: {BASE_DN}\n"
            f'{directory}users:\n  filter: "{AD_FILTER}"\n'
        )
        return load_spec(tmp_path)

    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "export.ldif").write_text(AD_LDIF, encoding="utf-8")
    _, from_ldif = read_directory(spec("  ldif: export.ldif\n"))
    _, from_ldap = read_directory(
        spec(
            f"  servers: [{ad_slapd.ldap_url}]\n  tls: none\n"
            f"  bind_dn: {READER_DN}\n  password: {{env: {PASSWORD_VAR}}}\n"
        )
    )
    assert ASCII_GUID.decode("ascii") == "0123456789:;<=>?"
    erin_id = "33323130-3534-3736-3839-3a3b3c3d3e3f"  # str(uuid.UUID(bytes_le=ASCII_GUID))
    finn_id = "44332211-6655-8877-99aa-bbccddeeff00"
    expected = {
        "erin@example.com": Recipient("mailbox", "Erin Example", erin_id, "active"),
        "e.example@example.com": Recipient("alias", target="erin@example.com"),
        "finn@example.com": Recipient("mailbox", "Finn Førde", finn_id, "active"),
        "ff@example.com": Recipient("alias", target="finn@example.com"),
    }
    assert from_ldif.recipients == expected
    assert from_ldap.recipients == expected
    assert from_ldif.dropped == from_ldap.dropped == {"foreign domain": 1}
    assert from_ldif.entries_read == from_ldap.entries_read == 2


@given(
    pieces=st.lists(st.sampled_from([b";", b"range", b";ra", b"nge=", b"=", b"x", b";range="])),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=8),
)
def test_a_range_option_is_seen_wherever_the_stream_is_cut(
    pieces: list[bytes], cuts: list[int]
) -> None:
    from reconciler.ldap_source import mentions_range

    stream = b"".join(pieces)
    seen, tail, at = False, b"", 0
    for cut in [*sorted(cuts), len(stream)]:
        found, tail = mentions_range(tail, stream[at : max(at, cut)])
        seen, at = seen or found, max(at, cut)
    assert seen == (b";range=" in stream)


def test_the_read_path_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.errors import ConfigError
    from reconciler.ldap_source import read_path

    monkeypatch.setenv("RECONCILER_LDAP_DECODER", "LDAP3 ")
    assert read_path() == "ldap3"
    monkeypatch.setenv("RECONCILER_LDAP_DECODER", "pyasn1")
    with pytest.raises(ConfigError, match="must be fast or ldap3, not 'pyasn1'"):
        read_path()


def test_a_page_asked_for_on_a_closed_connection_is_a_server_failure(
    slapd: SlapdServer, tmp_path: Path
) -> None:
    import ldap3

    from reconciler.ldap_connection import ServerUnusable, parse_server_url
    from reconciler.ldap_source import LdapSource, _WirePager

    spec = load_spec(workspace(tmp_path, [slapd.ldap_url], tls="none"))
    source = LdapSource(spec.directory, spec.users, None)
    never_opened = ldap3.Connection(ldap3.Server("127.0.0.1", port=slapd.port))
    assert never_opened.socket is None
    server = parse_server_url(slapd.ldap_url, "none")
    pager = _WirePager(source, never_opened, server, BASE_DN, ["mail"], "(mail=*)")
    with pytest.raises(ServerUnusable, match="the connection is closed"):
        pager.send(None)


def test_data_after_the_end_of_a_search_result_is_an_error(
    slapd: SlapdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The proxy sends the first searchResDone twice in one piece: the second one is not part
    # of any answer, and the read it comes in is not trusted. (ldap3's own decoder is not
    # this test's subject.)
    monkeypatch.setenv("RECONCILER_LDAP_DECODER", "fast")
    with TcpProxy(("127.0.0.1", slapd.port), TRAILING) as proxy:
        root = workspace(tmp_path, [proxy.url], tls="none")
        with pytest.raises(DirectoryError, match="data after the end of a search result"):
            list(open_source(load_spec(root)).entries())
