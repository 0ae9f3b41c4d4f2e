"""Login with directory credentials: is this the password of this user of this domain?

The Python API behind `reconciler auth DOMAIN USERNAME`, for a mail panel built on the tool::

    from reconciler.auth import authenticate
    from reconciler.reconcile import Workspace

    workspace = Workspace(Path("inventories"), Path("state"), Path("."))
    try:
        login = authenticate(workspace, "example.com", username, password)
    except LoginFailed:
        ...  # one message for every reason: show it as it is

What a login goes through, in order:

1. Refused before anything is asked: an empty or white-space-only password (an empty simple
   bind is an anonymous bind on many servers: a classic bypass), a user name that is empty, too
   long or has control characters.
2. The failure limit: after ``auth.max_failures`` failures of one user name within
   ``auth.failure_window`` the attempt fails without asking the directory.
3. The directory checks the password (reconciler/ldap_auth.py, ``auth.mode``).
4. Refused after the bind: a disabled account (``users.disabled_filter``) and, unless
   ``auth.require_recipient: false``, one whose address is not an active mailbox in the state.

Every refusal of 2-4 raises LoginFailed with the same message, so that an answer never tells an
unknown user from a wrong password or a disabled account; its ``reason`` (logged with the user
name, never with the password) says which it was. The password is held in a
:class:`~reconciler.secrets.Secret` from the first line on.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from reconciler.directory import Entry
from reconciler.disabled import is_disabled
from reconciler.errors import ConfigError, LoginFailed
from reconciler.failures import Clock, FailureCounter
from reconciler.inventory import load_specs
from reconciler.mapping import map_entries
from reconciler.reconcile import Workspace
from reconciler.secrets import Secret, resolve_secret
from reconciler.spec import DomainSpec
from reconciler.state import load_state

log = logging.getLogger("reconciler.auth")

FAILURE_FILE = "reconciler-auth-failures.json"
MAX_USERNAME_LENGTH = 256

# Reason classes decided here (the directory's are in ldap_auth).
TOO_MANY_FAILURES = "too many failures"
DISABLED = "account disabled"
NOT_A_RECIPIENT = "not an active recipient"
EMPTY_PASSWORD = "empty password"
BAD_USERNAME = "malformed user name"


@dataclass(frozen=True)
class Login:
    """A successful login: whose entry it is and, when it has one, the mailbox address."""

    domain: str
    username: str
    dn: str
    address: str | None
    server: str


def authenticate(
    workspace: Workspace,
    domain: str,
    username: str,
    password: Secret | str,
    *,
    clock: Clock = time.time,
) -> Login:
    """Check ``password`` for ``username`` of ``domain`` against its directory.

    Returns the Login; raises LoginFailed when refused (see the module docstring), ConfigError
    for a spec that cannot check passwords and DirectoryError when no server could answer (not
    counted as a failure). ``clock`` gives the time for the failure window.
    """
    # From here on only the Secret is held: a traceback's locals show "Secret(from …)".
    password = password if isinstance(password, Secret) else Secret(password, "the caller")
    check_username(username)
    check_password(password)
    (spec,) = load_specs(workspace.inventory_dir, [domain])
    service_password = _service_password(spec)
    # Imported here: refusing bad input above needs no LDAP client.
    from reconciler.ldap_auth import ad_identity, verify_password

    if spec.auth.mode == "active_directory":
        ad_identity(spec, username)  # a malformed DOMAIN\user: refused unasked, uncounted
    counter = FailureCounter(
        failure_file(workspace, spec), spec.auth.max_failures, spec.auth.failure_window, clock
    )
    key = f"{spec.domain} {counter_key(spec, username)}"
    attempt = counter.begin(key)
    if attempt is None:
        _refused(spec, username, TOO_MANY_FAILURES)
    try:
        verified = verify_password(spec, username, password, service_password)
        address = _check_account(workspace, spec, verified.entry)
    except LoginFailed as exc:
        _refused(spec, username, exc.reason)
    except BaseException:
        counter.forgive(key, attempt)  # the directory could not answer: not a guess
        raise
    counter.succeeded(key)
    log.info("%s: login of %r as %s", spec.domain, username, verified.entry.dn)
    return Login(spec.domain, username, verified.entry.dn, address, verified.server)


def check_username(username: str) -> None:
    """Refuse, before anything is asked, a user name no directory entry could have."""
    if not username.strip():
        problem = "the user name is empty"
    elif len(username) > MAX_USERNAME_LENGTH:
        problem = f"the user name is longer than {MAX_USERNAME_LENGTH} characters"
    elif any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in username):
        problem = "the user name contains control characters"
    else:
        return
    log.info("login refused before asking the directory: %s", problem)
    raise LoginFailed(BAD_USERNAME, f"login refused: {problem}")


def check_password(password: Secret) -> None:
    """Refuse an empty or white-space-only password before any bind: a simple bind with an
    empty password is an anonymous bind on many servers, and "succeeds"."""
    if not password.reveal().strip():
        log.info("login refused before asking the directory: %s", EMPTY_PASSWORD)
        raise LoginFailed(EMPTY_PASSWORD, "login refused: the password is empty")


def counter_key(spec: DomainSpec, username: str) -> str:
    """The account a user name means, as far as it can be told without asking: directories
    compare names case-insensitively and ignore surrounding spaces, and on Active Directory
    ``bob``, ``bob@<upn_suffix>`` and ``DOMAIN\\bob`` are the same account. (Guessing must not
    get five more tries per spelling.)"""
    name = " ".join(username.split()).casefold()
    if spec.auth.mode == "active_directory":
        suffix = "@" + (spec.auth.upn_suffix or spec.domain).casefold()
        name = name.rpartition("\\")[2]
        name = name.removesuffix(suffix)
    return name


def failure_file(workspace: Workspace, spec: DomainSpec) -> Path:
    """``auth.failure_file`` (relative to the repository root), else a file in ``.git``."""
    if spec.auth.failure_file is not None:
        return workspace.repo_dir / spec.auth.failure_file
    with workspace.store() as store:
        return store.git_dir / FAILURE_FILE


def _service_password(spec: DomainSpec) -> Secret | None:
    directory = spec.directory
    if not directory.servers:
        raise ConfigError(
            f"{spec.source}: {spec.domain} reads an LDIF export; "
            "checking passwords needs directory.servers"
        )
    if not directory.verify_certificate:
        log.warning(
            "%s: directory.verify_certificate is false: the server's identity is not "
            "checked, and users' passwords could be sent to an impostor",
            spec.source,
        )
    if directory.password is None:
        return None
    return resolve_secret(
        directory.password, spec.source.parent, f"{spec.source}: directory.password"
    )


def _check_account(workspace: Workspace, spec: DomainSpec, entry: Entry) -> str | None:
    """After the bind: the account must be enabled and (unless the spec says otherwise) its
    address an active mailbox in the state. Returns that address."""
    if is_disabled(entry, spec.users):
        raise LoginFailed(DISABLED)
    mapped = map_entries([entry], spec)
    addresses = [a for a, r in mapped.recipients.items() if r.kind == "mailbox"]
    if not spec.auth.require_recipient:
        return addresses[0] if addresses else None
    recipients = load_state(workspace.state_file(spec.domain), spec.domain).recipients
    for address in addresses:
        recipient = recipients.get(address)
        if recipient and recipient.kind == "mailbox" and recipient.status in (None, "active"):
            return address
    raise LoginFailed(NOT_A_RECIPIENT)


def _refused(spec: DomainSpec, username: str, reason: str) -> NoReturn:
    log.info("%s: login of %r failed: %s", spec.domain, username, reason)
    # A new error: the message must not vary with the reason, nor carry another's context.
    raise LoginFailed(reason) from None
