"""The ``policy`` and ``protected`` keys of a spec: defaults, merging and mistakes."""

from __future__ import annotations

from pathlib import Path

from test_specs import DEMO_INVENTORY, GOOD, inventory, only_problem

from reconciler.inventory import load_specs
from reconciler.spec import Limits, Policy

DEFAULTS = (DEMO_INVENTORY / "defaults.yaml").read_text("utf-8")


def test_the_shipped_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    (spec,) = load_specs(inventory(tmp_path, {"defaults.yaml": DEFAULTS, "example.com.yaml": GOOD}))
    assert spec.policy == Policy(
        allow_updates=True, allow_deactivations=True, removal="delete", limits=Limits()
    )
    assert spec.policy.limits.max_deletes == 500
    assert spec.protected == frozenset()


def test_without_defaults_the_documented_defaults_apply(tmp_path: Path) -> None:
    (spec,) = load_specs(inventory(tmp_path, {"example.com.yaml": GOOD}))
    assert spec.policy == Policy()


def test_a_domain_sets_some_limits_and_keeps_the_other_defaults(tmp_path: Path) -> None:
    text = GOOD + (
        "protected: [PostMaster@Example.com, abuse@example.com]\n"
        "policy:\n  removal: deactivate\n  limits:\n    max_deletes: 20\n    total: null\n"
        "    delete_percent: 12.5\n"
    )
    files = {"defaults.yaml": DEFAULTS, "example.com.yaml": text}
    (spec,) = load_specs(inventory(tmp_path, files))
    assert spec.protected == frozenset({"postmaster@example.com", "abuse@example.com"})
    assert spec.policy.removal == "deactivate"
    assert spec.policy.allow_updates is True
    assert spec.policy.limits == Limits(max_deletes=20, delete_percent=12.5)


def test_a_removal_typo(tmp_path: Path) -> None:
    text = GOOD + "policy:\n  removal: deactivated\n"
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:6:12: 'deactivated' is not one of delete, deactivate; "
        "did you mean 'deactivate'? (at policy/removal)"
    )


def test_a_limit_that_is_not_a_number(tmp_path: Path) -> None:
    text = GOOD + "policy:\n  limits:\n    max_deletes: lots\n"
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:7:18: expected an integer or null, got a string ('lots') "
        "(at policy/limits/max_deletes)"
    )


def test_a_percentage_over_100(tmp_path: Path) -> None:
    text = GOOD + "policy:\n  limits:\n    delete_percent: 150\n"
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:7:21: 150 is greater than the maximum of 100 "
        "(at policy/limits/delete_percent)"
    )


def test_an_unknown_limit(tmp_path: Path) -> None:
    text = GOOD + "policy:\n  limits:\n    max_delete: 3\n"
    assert only_problem(tmp_path, "example.com.yaml", text) == (
        "example.com.yaml:7:5: unknown key 'max_delete'; did you mean 'max_deletes'? "
        "(at policy/limits/max_delete)"
    )


def test_a_protected_value_that_is_not_an_address(tmp_path: Path) -> None:
    text = GOOD + "protected: [postmaster]\n"
    problem = only_problem(tmp_path, "example.com.yaml", text)
    assert problem.startswith("example.com.yaml:5:13: 'postmaster' does not match ")
    assert problem.endswith("(at protected/0)")


def test_a_protected_address_of_a_domain_alias_is_fine(tmp_path: Path) -> None:
    text = GOOD + "domain_aliases: [example.net]\nprotected: [abuse@EXAMPLE.net]\n"
    (spec,) = load_specs(inventory(tmp_path, {"example.com.yaml": text}))
    assert spec.protected == frozenset({"abuse@example.net"})
