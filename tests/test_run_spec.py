"""The spec keys of `reconciler run`: schedule and notify, built and checked at their line."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_specs import GOOD, inventory, only_problem

from reconciler.inventory import load_specs
from reconciler.runspec import EmailSpec, NotifySpec, ScheduleSpec, SmtpSpec, WebhookSpec
from reconciler.schedule import is_due, next_due
from reconciler.spec import DomainSpec

EMAIL = "notify:\n  email:\n    to: [a@example.com]\n    from: r@example.com\n"


def build(tmp_path: Path, text: str, defaults: str | None = None) -> DomainSpec:
    files = {"example.com.yaml": text} | ({"defaults.yaml": defaults} if defaults else {})
    [spec] = load_specs(inventory(tmp_path, files))
    return spec


@pytest.mark.parametrize(
    ("schedule", "seconds", "text"),
    [
        ("{every: 30m}", 1800, "every 30m"),
        ("{every: 6h}", 21600, "every 6h"),
        ("{every: 1d}", 86400, "every 1d"),
        ("{times_per_day: 24}", 3600, "24 times a day"),
        ("{times_per_day: 1}", 86400, "1 times a day"),
        ("{times_per_day: 5}", 17280, "5 times a day"),
    ],
)
def test_schedules(tmp_path: Path, schedule: str, seconds: float, text: str) -> None:
    spec = build(tmp_path, GOOD + f"schedule: {schedule}\n")
    assert spec.schedule == ScheduleSpec(seconds, text)


def test_no_schedule_and_no_notify(tmp_path: Path) -> None:
    spec = build(tmp_path, GOOD)
    assert spec.schedule is None
    assert spec.notify == NotifySpec()


def test_the_schedule_can_come_from_the_defaults(tmp_path: Path) -> None:
    spec = build(tmp_path, GOOD, defaults="schedule: {every: 2h}\n")
    assert spec.schedule == ScheduleSpec(7200, "every 2h")


def test_due_is_the_interval_since_the_last_attempt() -> None:
    from datetime import UTC, datetime, timedelta

    schedule, last = ScheduleSpec(3600, "every 1h"), datetime(2026, 1, 1, tzinfo=UTC)
    assert is_due(schedule, None, last)
    assert not is_due(schedule, last, last + timedelta(minutes=59))
    assert is_due(schedule, last, last + timedelta(hours=1))
    assert next_due(schedule, last, last) == last + timedelta(hours=1)


def test_every_notify_key(tmp_path: Path) -> None:
    (tmp_path / "inventories" / "certs").mkdir(parents=True)
    (tmp_path / "inventories" / "certs" / "ca.pem").write_text("x", encoding="utf-8")
    text = (
        GOOD
        + EMAIL
        + (
            "    smtp:\n      host: mail.example.com\n      port: 587\n      starttls: true\n"
            "      verify_certificate: false\n      ca_file: certs/ca.pem\n      username: bot\n"
            "      password: {env: SMTP_PASSWORD}\n      timeout: 5\n    on: [errors]\n"
            "  webhook:\n    url: https://hooks.example.com/T1/B2\n    on: [blocked, errors]\n"
            "    headers: {X-Team: mail, Authorization: {env: HOOK_TOKEN}}\n    timeout: 3\n"
        )
    )
    directory = tmp_path / "inventories"
    (directory / "data").mkdir()
    (directory / "data" / "example.ldif").write_text("version: 1\n", encoding="utf-8")
    (directory / "example.com.yaml").write_text(text, encoding="utf-8")
    [spec] = load_specs(directory)
    assert spec.notify == NotifySpec(
        email=EmailSpec(
            to=("a@example.com",),
            sender="r@example.com",
            smtp=SmtpSpec(
                "mail.example.com",
                587,
                True,
                False,
                False,
                directory / "certs/ca.pem",
                "bot",
                {"env": "SMTP_PASSWORD"},
                5.0,
            ),
            on=frozenset({"errors"}),
        ),
        webhook=WebhookSpec(
            "https://hooks.example.com/T1/B2",
            frozenset({"blocked", "errors"}),
            {"X-Team": "mail", "Authorization": {"env": "HOOK_TOKEN"}},
            3.0,
        ),
    )


def test_notify_defaults(tmp_path: Path) -> None:
    spec = build(tmp_path, GOOD + EMAIL + "    smtp: {host: localhost}\n")
    assert spec.notify.email is not None
    assert spec.notify.email.smtp == SmtpSpec("localhost")
    assert spec.notify.email.on == {"changes", "blocked", "errors"}
    ssl = build(tmp_path / "2", GOOD + EMAIL + "    smtp: {host: localhost, ssl: true}\n")
    assert ssl.notify.email is not None and ssl.notify.email.smtp.port == 465


SMTP = GOOD + EMAIL + "    smtp: {host: localhost, "


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            GOOD + "schedule: {every: 6x}\n",
            "example.com.yaml:5:19: '6x' is not an interval like 30m, 6h or 1d (at schedule/every)",
        ),
        (
            GOOD + "schedule: {every: 90s}\n",
            "example.com.yaml:5:19: '90s' is not an interval like 30m, 6h or 1d "
            "(at schedule/every)",
        ),
        (
            GOOD + "schedule:\n  every: 6h\n  times_per_day: 4\n",
            "example.com.yaml:7:18: schedule has both 'every' and 'times_per_day'; keep one "
            "(at schedule/times_per_day)",
        ),
        (
            GOOD + "schedule: {times_per_day: 25}\n",
            "example.com.yaml:5:27: 25 is greater than the maximum of 24 "
            "(at schedule/times_per_day)",
        ),
        (
            GOOD + "schedule: {times_per_day: 0}\n",
            "example.com.yaml:5:27: 0 is less than the minimum of 1 (at schedule/times_per_day)",
        ),
        (
            GOOD + "schedule: {evry: 6h}\n",
            "example.com.yaml:5:12: unknown key 'evry'; did you mean 'every'? (at schedule/evry)",
        ),
        (
            SMTP + "username: bot, password: hunter2}\n",
            "example.com.yaml:9:54: inline passwords are not allowed: write {env: VAR} or "
            "{file: PATH} (at notify/email/smtp/password)",
        ),
        (
            SMTP + "ssl: true, starttls: true}\n",
            "example.com.yaml:9:50: smtp has both 'ssl' and 'starttls'; ssl is TLS already "
            "(at notify/email/smtp/starttls)",
        ),
        (
            SMTP + "username: bob}\n",
            "example.com.yaml:9:39: smtp username needs a password: {env: VAR} or {file: PATH} "
            "(at notify/email/smtp/username)",
        ),
        (
            SMTP + "password: {env: P}}\n",
            "example.com.yaml:9:39: smtp password needs a username (at notify/email/smtp/password)",
        ),
        (
            GOOD + EMAIL + "    smtp: {host: localhost}\n    on: [changes, always]\n",
            "example.com.yaml:10:19: 'always' is not one of changes, blocked, errors "
            "(at notify/email/on/1)",
        ),
        (
            GOOD + "notify:\n  email:\n    to: [a@example.com]\n    smtp: {host: localhost}\n",
            "example.com.yaml:7:5: missing required key 'from' (at notify/email)",
        ),
        (
            GOOD + EMAIL.replace("a@example.com", "nobody") + "    smtp: {host: localhost}\n",
            "example.com.yaml:7:10: 'nobody' is not a mail address (at notify/email/to/0)",
        ),
        (
            GOOD + "notify:\n  webhook: {url: ftp://x}\n",
            "example.com.yaml:6:18: 'ftp://x' is not an http:// or https:// URL "
            "(at notify/webhook/url)",
        ),
        (
            GOOD + "notify:\n  webhook: {url: 'http://x', headers: {Authorization: 5}}\n",
            "example.com.yaml:6:55: expected a string or {env: VAR} / {file: PATH}, got an "
            "integer (at notify/webhook/headers/Authorization)",
        ),
    ],
)
def test_bad_run_keys_are_reported_at_their_line(tmp_path: Path, text: str, problem: str) -> None:
    assert only_problem(tmp_path, "example.com.yaml", text) == problem


def test_a_missing_smtp_ca_file(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "example.com.yaml", SMTP + "ca_file: nope.pem}\n")
    assert problem.startswith("example.com.yaml:9:38: CA file ")
    assert problem.endswith("nope.pem does not exist (at notify/email/smtp/ca_file)")
