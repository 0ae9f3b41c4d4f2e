"""The Markdown plan (pull-request comments): its layout, its escaping, and its size limit."""

from __future__ import annotations

import re

from reconciler.markdown import MARKDOWN_LIMIT, PER_KIND, render_markdown
from reconciler.plan import DomainPlan, compute_changes
from reconciler.recipient import Recipient
from reconciler.spec import Limits

DOMAIN = "example.com"


def mailbox(n: int, name: str) -> Recipient:
    return Recipient("mailbox", name, f"id-{n}", "active")


def big_plan(domain: str = DOMAIN, adds: int = 30_000) -> DomainPlan:
    """50,000 changes when ``adds`` is 30,000: 10,000 removals, 10,000 updates, the adds."""
    long = "A Rather Long Display Name " * 4
    existing = {f"old{n}@{domain}": mailbox(n, "Old") for n in range(20_000)}
    desired = {f"old{n}@{domain}": mailbox(n, "Renamed " + long) for n in range(10_000)}
    desired |= {f"new{n}@{domain}": mailbox(n, long) for n in range(adds)}
    return DomainPlan(
        domain=domain,
        changes=compute_changes(existing, desired),
        existing_count=len(existing),
        desired_count=len(desired),
        source="LDIF data/x.ldif: 40000 matching entries",
        limits=Limits(),
    )


def test_a_50000_change_plan_fits_in_a_comment() -> None:
    plan = big_plan()
    assert len(plan.changes) == 50_000
    text = render_markdown([plan])
    assert len(text) < 65_000
    assert len(text) <= MARKDOWN_LIMIT
    assert "| example.com | 30000 | 10000 | 0 | 10000 | 0 | 20000 → 40000 | ⛔ refused |" in text
    for title, shown in (("10000 to remove", "- old"), ("10000 to update", "~ old")):
        assert f"<details><summary>{title}</summary>" in text
        assert text.count(f"\n{shown}") == PER_KIND
    assert text.count("\n+ new") == PER_KIND
    assert f"… and {10_000 - PER_KIND} more (see `reconciler plan --format json`)" in text
    assert f"… and {30_000 - PER_KIND} more (see `reconciler plan --format json`)" in text
    # The refusals are all there, with the digest to approve.
    assert (
        "> ⛔ **Refused:** example.com: 10000 removals, over policy.limits.max\\_deletes 500"
        in (text)
    )
    assert f"Plan digest: `{plan.digest()}`" in text


def test_many_big_domains_still_fit_with_fewer_changes_listed() -> None:
    long = "A Rather Long Display Name " * 4
    plans = [
        DomainPlan(
            domain=f"d{n}.example",
            changes=compute_changes(
                {}, {f"u{k}@d{n}.example": mailbox(k, long) for k in range(500)}
            ),
            existing_count=0,
            desired_count=500,
            source="LDIF",
        )
        for n in range(12)
    ]
    text = render_markdown(plans)
    assert len(text) <= MARKDOWN_LIMIT
    listed = len(re.findall(r"(?m)^[-~+] ", text))
    assert 0 < listed < 12 * PER_KIND  # fewer per kind than for one domain
    assert "more domains not shown" not in text


def test_thousands_of_domains_are_cut_with_a_count_of_the_rest() -> None:
    plans = [
        DomainPlan(
            domain=f"domain{n:04d}.example",
            changes=compute_changes({}, {f"a@domain{n:04d}.example": mailbox(n, "A")}),
            existing_count=0,
            desired_count=1,
            source="LDIF",
        )
        for n in range(3_000)
    ]
    text = render_markdown(plans)
    assert len(text) <= MARKDOWN_LIMIT
    assert "… and 2900 more domains with changes." in text
    assert re.search(r"… and \d+ more domains not shown here", text)


def test_a_tiny_limit_is_still_respected() -> None:
    text = render_markdown([big_plan(adds=10)], limit=200)
    assert len(text) <= 200
    assert text.endswith("… (cut to fit)\n")


def test_in_sync_domains_are_counted_not_listed() -> None:
    in_sync = DomainPlan(DOMAIN, (), 3, 3, "LDIF")
    text = render_markdown([in_sync, in_sync])
    assert text == (
        "## Reconciler plan\n\nPlan: no changes in 2 domains. ✅ apply would go ahead.\n\n"
    )


def test_text_from_the_directory_cannot_inject_markup() -> None:
    evil = mailbox(1, "<img src=x> *bold* | pipe")
    plan = DomainPlan(
        DOMAIN,
        compute_changes({}, {f"x_y@{DOMAIN}": evil}),
        0,
        1,
        "LDIF <b>x</b>",
        notes=("a <script> note",),
    )
    text = render_markdown([plan])
    assert "<img" not in text.split("```diff")[0]
    assert "Source: LDIF &lt;b&gt;x&lt;/b&gt;" in text
    assert "> Note: a &lt;script&gt; note" in text
    # Inside the diff block the line is shown as it is (code is not interpreted).
    assert f'+ x_y@{DOMAIN}  mailbox "<img src=x> *bold* | pipe"' in text


def test_a_huge_change_line_is_shortened() -> None:
    members = tuple(f"m{n}@{DOMAIN}" for n in range(5_000))
    old = {f"list@{DOMAIN}": Recipient("list", "L", members=members)}
    new = {f"list@{DOMAIN}": Recipient("list", "L", members=members[:10])}
    plan = DomainPlan(DOMAIN, compute_changes(old, new), 1, 1, "LDIF")
    line = next(x for x in render_markdown([plan]).splitlines() if x.startswith("~ "))
    assert len(line) == 300
    assert line.endswith("…")
