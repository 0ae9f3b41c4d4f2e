"""The spec keys of the automated job: ``schedule`` (when `reconciler run` syncs a domain) and
``notify`` (whom it tells what happened).

Pure: frozen dataclasses built from a merged, schema-valid spec, and the semantic checks the
schema cannot express. Secrets stay references ({env}/{file}) until a notification is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENTS = ("changes", "blocked", "errors")
DEFAULT_SMTP_PORT = 25
DEFAULT_SMTPS_PORT = 465
DEFAULT_SMTP_TIMEOUT = 30.0
DEFAULT_WEBHOOK_TIMEOUT = 10.0
DAY_SECONDS = 86400
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": DAY_SECONDS}


@dataclass(frozen=True)
class ScheduleSpec:
    """The least time between two syncs of a domain by `reconciler run`."""

    interval: float  # seconds
    text: str  # as the spec wrote it ("6h", "4 times a day"), for messages


@dataclass(frozen=True)
class SmtpSpec:
    host: str
    port: int = DEFAULT_SMTP_PORT
    starttls: bool = False
    ssl: bool = False
    verify_certificate: bool = True
    ca_file: Path | None = None
    username: str | None = None
    password: Mapping[str, str] | None = None  # where the secret is, never it
    timeout: float = DEFAULT_SMTP_TIMEOUT


@dataclass(frozen=True)
class EmailSpec:
    to: tuple[str, ...]
    sender: str  # the spec's `from`
    smtp: SmtpSpec
    on: frozenset[str] = frozenset(EVENTS)


@dataclass(frozen=True)
class WebhookSpec:
    url: str
    on: frozenset[str] = frozenset(EVENTS)
    # A header value is a string, or a secret reference ({env}/{file}) for a token.
    headers: Mapping[str, str | Mapping[str, str]] = field(default_factory=dict)
    timeout: float = DEFAULT_WEBHOOK_TIMEOUT


@dataclass(frozen=True)
class NotifySpec:
    email: EmailSpec | None = None
    webhook: WebhookSpec | None = None


def build_schedule(schedule: Mapping[str, Any] | None) -> ScheduleSpec | None:
    if not schedule:
        return None
    if "every" in schedule:
        every = str(schedule["every"])
        return ScheduleSpec(float(int(every[:-1]) * _UNIT_SECONDS[every[-1]]), f"every {every}")
    times = int(schedule["times_per_day"])
    return ScheduleSpec(DAY_SECONDS / times, f"{times} times a day")


def build_notify(notify: Mapping[str, Any] | None, inventory_dir: Path) -> NotifySpec:
    if not notify:
        return NotifySpec()
    email = notify.get("email")
    webhook = notify.get("webhook")
    return NotifySpec(
        email=_email(email, inventory_dir) if email else None,
        webhook=(
            WebhookSpec(
                url=webhook["url"],
                on=frozenset(webhook.get("on", EVENTS)),
                headers=dict(webhook.get("headers", {})),
                timeout=float(webhook.get("timeout", DEFAULT_WEBHOOK_TIMEOUT)),
            )
            if webhook
            else None
        ),
    )


def _email(email: Mapping[str, Any], inventory_dir: Path) -> EmailSpec:
    smtp = email["smtp"]
    ssl = bool(smtp.get("ssl", False))
    return EmailSpec(
        to=tuple(email["to"]),
        sender=email["from"],
        smtp=SmtpSpec(
            host=smtp["host"],
            port=int(smtp.get("port", DEFAULT_SMTPS_PORT if ssl else DEFAULT_SMTP_PORT)),
            starttls=bool(smtp.get("starttls", False)),
            ssl=ssl,
            verify_certificate=bool(smtp.get("verify_certificate", True)),
            ca_file=inventory_dir / smtp["ca_file"] if "ca_file" in smtp else None,
            username=smtp.get("username"),
            password=smtp.get("password"),
            timeout=float(smtp.get("timeout", DEFAULT_SMTP_TIMEOUT)),
        ),
        on=frozenset(email.get("on", EVENTS)),
    )


def automation_problems(
    merged: Mapping[str, Any], inventory_dir: Path
) -> list[tuple[list[str | int], str]]:
    """(JSON path, message) for what the schema cannot say about ``schedule`` and ``notify``."""
    problems: list[tuple[list[str | int], str]] = []
    schedule = merged.get("schedule") or {}
    if "every" in schedule and "times_per_day" in schedule:
        problems.append(
            (
                ["schedule", "times_per_day"],
                "schedule has both 'every' and 'times_per_day'; keep one",
            )
        )
    smtp = (merged.get("notify") or {}).get("email", {}).get("smtp")
    if smtp:
        where: list[str | int] = ["notify", "email", "smtp"]
        if smtp.get("ssl") and smtp.get("starttls"):
            problems.append(
                ([*where, "starttls"], "smtp has both 'ssl' and 'starttls'; ssl is TLS already")
            )
        if "username" in smtp and "password" not in smtp:
            problems.append(
                ([*where, "username"], "smtp username needs a password: {env: VAR} or {file: PATH}")
            )
        if "password" in smtp and "username" not in smtp:
            problems.append(([*where, "password"], "smtp password needs a username"))
        if "ca_file" in smtp and not (inventory_dir / smtp["ca_file"]).is_file():
            problems.append(
                ([*where, "ca_file"], f"CA file {inventory_dir / smtp['ca_file']} does not exist")
            )
    return problems
