"""The pure parts of login: the spec's auth keys, users.disabled_filter, the failure counter."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
from test_specs import GOOD, inventory, only_problem

from reconciler.directory import Entry
from reconciler.disabled import is_disabled
from reconciler.errors import StateError
from reconciler.failures import FailureCounter
from reconciler.inventory import load_specs
from reconciler.spec import AuthSpec, UsersSpec, duration_seconds

AD_DISABLED = "(userAccountControl:1.2.840.113556.1.4.803:=2)"


def build(tmp_path: Path, text: str) -> AuthSpec:
    [spec] = load_specs(inventory(tmp_path, {"example.com.yaml": text}))
    return spec.auth


# --- auth keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flavor", "mode", "attribute"),
    [
        ("active_directory", "active_directory", "userPrincipalName"),
        ("openldap", "ldap", "uid"),
        ("generic", "ldap", "uid"),
    ],
)
def test_the_flavor_gives_the_auth_defaults(
    tmp_path: Path, flavor: str, mode: str, attribute: str
) -> None:
    assert build(tmp_path, GOOD.replace("active_directory", flavor)) == AuthSpec(
        mode=mode,
        search_attribute=attribute,
        require_recipient=True,
        max_failures=5,
        failure_window=900.0,
        failure_file=None,
        upn_suffix=None,
    )


def test_every_auth_key(tmp_path: Path) -> None:
    text = GOOD + (
        "auth:\n  mode: ldap\n  search_attribute: mail\n  require_recipient: false\n"
        "  max_failures: 3\n  failure_window: 2h\n  failure_file: /var/lib/reconciler/f.json\n"
        "  upn_suffix: corp.example.com\n"
    )
    assert build(tmp_path, text) == AuthSpec(
        "ldap", "mail", False, 3, 7200.0, Path("/var/lib/reconciler/f.json"), "corp.example.com"
    )


def test_the_defaults_file_gives_auth_keys_to_every_spec(tmp_path: Path) -> None:
    defaults = "auth:\n  max_failures: 10\n  failure_window: 600\n"
    [spec] = load_specs(inventory(tmp_path, {"defaults.yaml": defaults, "example.com.yaml": GOOD}))
    assert (spec.auth.max_failures, spec.auth.failure_window) == (10, 600.0)
    assert spec.auth.mode == "active_directory"


def test_the_shipped_defaults_spell_out_the_auth_defaults() -> None:
    text = (Path(__file__).parent.parent / "inventories" / "defaults.yaml").read_text()
    assert "auth:" in text
    [spec] = load_specs(Path(__file__).parent.parent / "inventories")
    assert spec.auth == AuthSpec("active_directory", "userPrincipalName", True, 5, 900.0)


@pytest.mark.parametrize(
    ("auth", "problem"),
    [
        (
            "  mode: kerberos\n",
            "example.com.yaml:6:9: 'kerberos' is not one of ldap, active_directory (at auth/mode)",
        ),
        (
            "  failure_window: 15 minutes\n",
            "example.com.yaml:6:19: '15 minutes' does not match '^[1-9][0-9]*[smhd]$' "
            "(at auth/failure_window)",
        ),
        (
            "  max_failures: 0\n",
            "example.com.yaml:6:17: 0 is less than the minimum of 1 (at auth/max_failures)",
        ),
        (
            "  require_recipients: false\n",
            "example.com.yaml:6:3: unknown key 'require_recipients'; did you mean "
            "'require_recipient'? (at auth/require_recipients)",
        ),
        (
            "  search_attribute: 'u id'\n",
            "example.com.yaml:6:21: 'u id' is not an LDAP attribute name "
            "(at auth/search_attribute)",
        ),
    ],
)
def test_bad_auth_keys_are_reported_at_their_line(tmp_path: Path, auth: str, problem: str) -> None:
    assert only_problem(tmp_path, "example.com.yaml", GOOD + "auth:\n" + auth) == problem


def test_a_bad_disabled_filter_is_reported_at_its_line(tmp_path: Path) -> None:
    text = GOOD + 'users:\n  disabled_filter: "(userAccountControl=2"\n'
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:6:20: invalid LDAP filter: expected ')' to close the filter opened "
        "at character 1, found end of filter at character 22 of '(userAccountControl=2' "
        "(at users/disabled_filter)"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("6h", 21600), ("1d", 86400), (30, 30), (" 2m ", 120)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert duration_seconds(text) == seconds


def test_a_bad_duration() -> None:
    with pytest.raises(ValueError, match="is not a duration like 90s, 15m, 6h or 1d"):
        duration_seconds("15 min")


# --- users.disabled_filter -----------------------------------------------------------------------


def users(disabled_filter: str | None) -> UsersSpec:
    return UsersSpec("(mail=*)", "mail", (), None, None, disabled_filter=disabled_filter)


@pytest.mark.parametrize(
    ("value", "disabled"),
    [("512", False), ("514", True), ("66050", True), ("66048", False), ("2", True)],
)
def test_active_directorys_disabled_bit(value: str, disabled: bool) -> None:
    entry = Entry("cn=x", {"useraccountcontrol": [value]})
    assert is_disabled(entry, users(AD_DISABLED)) is disabled


def test_no_disabled_filter_disables_nobody() -> None:
    entry = Entry("cn=x", {"useraccountcontrol": ["514"]})
    assert is_disabled(entry, users(None)) is False
    assert is_disabled(Entry("cn=y", {}), users(AD_DISABLED)) is False  # no attribute: enabled


def test_any_filter_can_say_disabled() -> None:
    spec = users("(|(employeeType=left)(!(accountStatus=active)))")
    assert is_disabled(Entry("a", {"employeetype": ["Left"], "accountstatus": ["active"]}), spec)
    assert is_disabled(Entry("b", {"accountstatus": ["locked"]}), spec)
    assert not is_disabled(Entry("c", {"accountstatus": ["ACTIVE"]}), spec)


# --- the failure counter -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_counter_counts_in_advance_and_forgets_on_success(tmp_path: Path) -> None:
    clock = Clock()
    counter = FailureCounter(tmp_path / "f.json", 3, 60, clock)
    attempts = [counter.begin("d bob") for _ in range(3)]
    assert attempts == [1000.0] * 3
    assert counter.begin("d bob") is None  # the fourth is refused unasked, and not counted
    assert counter.locked_until("d bob") == 1060.0
    assert counter.begin("d ann") == 1000.0  # another user is not affected
    counter.forgive("d bob", 1000.0)
    assert counter.locked_until("d bob") is None
    counter.succeeded("d bob")
    assert json.loads((tmp_path / "f.json").read_text()) == {
        "format": 1,
        "failures": {"d ann": [1000.0]},
    }


def test_old_failures_drop_out_of_the_window(tmp_path: Path) -> None:
    clock = Clock()
    counter = FailureCounter(tmp_path / "f.json", 2, 60, clock)
    counter.begin("k")
    clock.now += 30
    counter.begin("k")
    assert counter.begin("k") is None
    clock.now += 31  # the first failure is 61 s old
    assert counter.begin("k") == clock.now
    assert counter.begin("k") is None
    clock.now += 1000
    counter.begin("other")
    assert json.loads((tmp_path / "f.json").read_text())["failures"] == {"other": [clock.now]}


@pytest.mark.parametrize(
    "text", ["{", '{"format": 2, "failures": {}}', "[]", '{"format": 1, "failures": []}']
)
def test_an_unreadable_counter_fails_closed(tmp_path: Path, text: str) -> None:
    path = tmp_path / "f.json"
    path.write_text(text, encoding="utf-8")
    counter = FailureCounter(path, 5, 60, Clock())
    with pytest.raises(StateError, match="the failed-login counter is unreadable") as raised:
        counter.begin("k")
    assert raised.value.hint == "delete the file to reset every count (it is not in Git)"
    assert path.read_text(encoding="utf-8") == text  # left for a person to look at


def _guess(path: str, results: multiprocessing.Queue[bool]) -> None:  # type: ignore[type-arg]
    counter = FailureCounter(Path(path), 4, 600, lambda: 1000.0)
    results.put(counter.begin("example.com bob") is not None)


def test_processes_racing_get_no_more_than_the_limit(tmp_path: Path) -> None:
    """Separate processes, each with its own lock object: the file lock is what counts."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    path = str(tmp_path / "f.json")
    processes = [context.Process(target=_guess, args=(path, results)) for _ in range(10)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    allowed = [results.get(timeout=5) for _ in processes]
    assert sorted(allowed) == [False] * 6 + [True] * 4
    assert json.loads(Path(path).read_text())["failures"] == {"example.com bob": [1000.0] * 4}
