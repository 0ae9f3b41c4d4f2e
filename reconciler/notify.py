"""Telling people what `reconciler run` did to a domain: a mail through SMTP, a JSON webhook.

A notification is a side effect after the fact: the sync is committed (or refused, or failed)
before anything is sent, and a failed delivery is only reported (never raised), so it can
neither undo nor block a sync, nor change the run's exit code. Nothing is sent when nothing
happened (a domain in sync).

Delivery reports name the recipients or the webhook's host, never a password, a header value
or the webhook's path (chat webhooks carry their token in it).
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from reconciler import __version__
from reconciler.errors import ReconcilerError
from reconciler.runspec import EmailSpec, NotifySpec, SmtpSpec, WebhookSpec
from reconciler.secrets import Secret, resolve_secret

MAX_PLAN_LINES = 200  # of a report's body; the commit has the whole plan


@dataclass(frozen=True)
class Report:
    """What one domain's part of a run came to, as the notifications tell it."""

    domain: str
    outcome: str  # applied | in sync | refused | failed | held
    event: str | None  # changes | blocked | errors; None when there is nothing to tell
    counts: Mapping[str, int] = field(default_factory=dict)
    summary: str = ""
    plan_lines: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    error: str | None = None
    commit: str | None = None


@dataclass(frozen=True)
class Delivery:
    """One notification sent, or why it was not."""

    channel: str  # "email to a@example.com" / "webhook to hooks.example.com"
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        return f"{self.channel}: sent" if self.ok else f"{self.channel}: failed: {self.error}"


def subject(report: Report) -> str:
    counts = " ".join(f"{k}={v}" for k, v in report.counts.items())
    return f"reconciler: {report.domain} {report.outcome}" + (f" ({counts})" if counts else "")


def body(report: Report) -> str:
    lines = [f"Domain:  {report.domain}", f"Outcome: {report.outcome}"]
    if report.commit:
        lines.append(f"Commit:  {report.commit}")
    if report.summary:
        lines.append(f"Plan:    {report.summary}")
    if report.reasons:
        lines += ["", "Refused, nothing was applied:"] + [f"  {r}" for r in report.reasons]
    if report.error:
        lines += ["", "Error, nothing was applied:", f"  {report.error}"]
    if report.plan_lines:
        lines += ["", "The plan:", *report.plan_lines[:MAX_PLAN_LINES]]
        if len(report.plan_lines) > MAX_PLAN_LINES:
            lines.append(f"  … and {len(report.plan_lines) - MAX_PLAN_LINES} more lines")
    return "\n".join(lines) + "\n"


def payload(report: Report) -> dict[str, Any]:
    return {
        "domain": report.domain,
        "outcome": report.outcome,
        "event": report.event,
        "counts": dict(report.counts),
        "summary": report.summary,
        "refusals": list(report.reasons),
        "error": report.error,
        "commit": report.commit,
        "generator": f"reconciler {__version__}",
    }


def notify(spec: NotifySpec, report: Report, base_dir: Path) -> list[Delivery]:
    """Send ``report`` to every channel of ``spec`` that listens for its event. Never raises
    for a delivery problem: each one comes back as a failed :class:`Delivery`.
    ``base_dir``: where {file: PATH} secret references are relative to."""
    if report.event is None:
        return []
    deliveries = []
    if spec.email is not None and report.event in spec.email.on:
        email = spec.email
        channel = f"email to {', '.join(email.to)}"
        deliveries.append(_deliver(channel, lambda: send_email(email, report, base_dir)))
    if spec.webhook is not None and report.event in spec.webhook.on:
        webhook = spec.webhook
        channel = f"webhook to {_host(webhook.url)}"
        deliveries.append(_deliver(channel, lambda: post_webhook(webhook, report, base_dir)))
    return deliveries


def _host(url: str) -> str:
    """host[:port] of a URL: never its user:password@ part, path or query."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "?") + (f":{port}" if port else "")


def _deliver(channel: str, send: Callable[[], None]) -> Delivery:
    try:
        send()
    except ReconcilerError as exc:  # an unset password variable, say
        return Delivery(channel, exc.message)
    except (smtplib.SMTPException, OSError, ValueError) as exc:
        # OSError covers refused and timed-out connections, TLS and certificate failures.
        return Delivery(channel, f"{type(exc).__name__}: {exc}")
    return Delivery(channel)


def send_email(spec: EmailSpec, report: Report, base_dir: Path) -> None:
    """Send the report by SMTP; raises smtplib.SMTPException / OSError / ReconcilerError."""
    message = EmailMessage()
    message["Subject"] = subject(report)
    message["From"] = spec.sender
    message["To"] = ", ".join(spec.to)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=spec.sender.rpartition("@")[2])
    message.set_content(body(report))
    smtp = spec.smtp
    password = _smtp_password(smtp, base_dir)
    with _connect(smtp) as client:
        if smtp.starttls:
            # Raises when the server offers no STARTTLS: the mail is never sent in the clear.
            client.starttls(context=_tls_context(smtp))
        if smtp.username is not None and password is not None:
            client.login(smtp.username, password.reveal())
        client.send_message(message, from_addr=spec.sender, to_addrs=list(spec.to))


def _connect(smtp: SmtpSpec) -> smtplib.SMTP:
    if smtp.ssl:
        return smtplib.SMTP_SSL(
            smtp.host, smtp.port, timeout=smtp.timeout, context=_tls_context(smtp)
        )
    return smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)


def _tls_context(smtp: SmtpSpec) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(smtp.ca_file) if smtp.ca_file else None)
    if not smtp.verify_certificate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _smtp_password(smtp: SmtpSpec, base_dir: Path) -> Secret | None:
    if smtp.password is None:
        return None
    return resolve_secret(smtp.password, base_dir, "notify.email.smtp.password")


def post_webhook(spec: WebhookSpec, report: Report, base_dir: Path) -> None:
    """POST the report as JSON; raises OSError (urllib's errors among them) on failure or on
    a reply that is not 2xx."""
    headers = {"Content-Type": "application/json", "User-Agent": f"reconciler/{__version__}"}
    for name, value in spec.headers.items():
        text = (
            value
            if isinstance(value, str)
            else resolve_secret(value, base_dir, f"notify.webhook.headers.{name}").reveal()
        )
        if any(c in text for c in "\r\n\0"):
            # http.client would refuse it with the value in its message: a token's, maybe.
            raise OSError(f"the value of header {name} has a line break or NUL")
        headers[name] = text
    data = json.dumps(payload(report), ensure_ascii=False, sort_keys=True).encode("utf-8")
    request = urllib.request.Request(spec.url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=spec.timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        # Its text would repeat the URL; the status and reason are what matter.
        raise OSError(f"the server answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise OSError(f"cannot reach the webhook: {exc.reason}") from None
    if not 200 <= status < 300:
        raise OSError(f"the server answered {status}")
