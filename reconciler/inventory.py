"""Load the inventory: defaults.yaml plus one <domain>.yaml per domain, merged and validated.

Every problem is collected (not just the first) and reported as
``file:line:col: what is wrong (at json/path)``, pointing into whichever file holds the value.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import ConfigError, FilterSyntaxError, SpecErrors
from reconciler.forked import verdict_in_child
from reconciler.ldapfilter import parse_filter
from reconciler.rules import rule_problems
from reconciler.runspec import automation_problems
from reconciler.spec import (
    DEFAULT_FLAVOR,
    FLAVOR_DEFAULTS,
    DomainSpec,
    Rule,
    build_spec,
    normalize_domain,
)
from reconciler.yamlio import JsonPath, Position, YamlDocument, load_yaml

DEFAULTS_FILE = "defaults.yaml"
SPEC_SCHEMA = "domain.schema.json"

if TYPE_CHECKING:
    import jsonschema

SchemaErrors = Callable[[Any], Iterator["jsonschema.ValidationError"]]

_DOMAIN_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec, with where it is."""

    where: Position | None
    path: JsonPath
    message: str

    def __str__(self) -> str:
        where = f"{self.where}: " if self.where else ""
        at = "/".join(str(p) for p in self.path)
        return f"{where}{self.message}" + (f" (at {at})" if at else "")


def schema_dir() -> Path:
    """The schemas: beside the package in a wheel, at the repository root in a checkout."""
    packaged = Path(__file__).parent / "schemas"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "schemas"


def spec_files(inventory_dir: Path) -> list[Path]:
    """The domain spec files of an inventory, sorted (defaults.yaml is not one)."""
    if not inventory_dir.is_dir():
        raise ConfigError(
            f"inventory directory {inventory_dir} does not exist",
            "run from the repository root or pass -i/--inventory DIR",
        )
    return sorted(p for p in inventory_dir.glob("*.yaml") if p.name != DEFAULTS_FILE)


def load_specs(
    inventory_dir: Path,
    domains: Sequence[str] = (),
    *,
    meanwhile: Callable[[], object] | None = None,
) -> list[DomainSpec]:
    """Load and validate the named domains (default: all); raise SpecErrors on any problem.

    ``meanwhile``: work to get on with while the specs are checked against the schema (see
    :func:`check_inventory`)."""
    specs, problems = check_inventory(inventory_dir, domains, meanwhile=meanwhile)
    if problems:
        raise SpecErrors([str(p) for p in problems])
    return specs


def check_inventory(
    inventory_dir: Path,
    domains: Sequence[str] = (),
    *,
    meanwhile: Callable[[], object] | None = None,
) -> tuple[list[DomainSpec], list[Problem]]:
    """Validate the inventory; returns the valid specs and every problem found.

    With ``meanwhile`` the schema check (and the import of jsonschema, a fifth of a second)
    is done in a child process while this one runs ``meanwhile``; when the child finds the
    schema has something to say, or cannot tell, it is asked again here, for the messages."""
    files = spec_files(inventory_dir)
    if domains:
        by_name = {p.stem.lower(): p for p in files}
        missing = [d for d in domains if d.lower() not in by_name]
        if missing:
            raise ConfigError(
                f"no spec for {', '.join(missing)} in {inventory_dir}",
                f"expected {inventory_dir / (missing[0] + '.yaml')}",
            )
        files = [by_name[d.lower()] for d in dict.fromkeys(domains)]
    elif not files:
        raise ConfigError(f"no domain specs (*.yaml) in {inventory_dir}")

    defaults_file = inventory_dir / DEFAULTS_FILE
    defaults = load_yaml(defaults_file) if defaults_file.exists() else None
    loaded: list[YamlDocument | Problem] = []
    for file in files:
        try:
            loaded.append(load_yaml(file))
        except ConfigError as exc:  # a YAML error in one spec must not hide the other specs'
            loaded.append(Problem(None, [], exc.message))

    def layers_of(doc: YamlDocument) -> list[YamlDocument]:
        return [doc] + ([defaults] if defaults is not None else [])

    def schema_clean() -> bool:
        """Whether the schema finds nothing wrong with any file (what the checks below would
        find with the schema's help)."""
        if defaults is not None and _check_layer_alone(defaults, _schema_errors):
            return False
        documents = (d for d in loaded if isinstance(d, YamlDocument))
        return not any(_schema_check(d, layers_of(d), _schema_errors) for d in documents)

    schema_errors = _schema_errors
    if meanwhile is not None and verdict_in_child(schema_clean, meanwhile):
        schema_errors = _no_schema_errors

    problems: list[Problem] = []
    if defaults is not None:
        problems += _check_layer_alone(defaults, schema_errors)
    specs: list[DomainSpec] = []
    for file, doc in zip(files, loaded, strict=True):
        if isinstance(doc, Problem):
            problems.append(doc)
            continue
        layers = layers_of(doc)
        found = _check_spec(doc, layers, inventory_dir, schema_errors)
        problems += [p for p in found if p not in problems]
        if not found:
            specs.append(build_spec(_merged(layers), file, inventory_dir))
    return specs, problems


def _merge(base: Any, override: Any) -> Any:
    """Deep merge like Ansible group vars: mappings merge, lists and scalars replace."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base.get(key), value) if key in base else value
        return merged
    return override


def _check_layer_alone(doc: YamlDocument, schema_errors: SchemaErrors) -> list[Problem]:
    """The defaults on their own: every schema rule except the required keys."""
    if not isinstance(doc.data, dict):
        return [Problem(doc.locate([]), [], "expected a mapping of spec keys")]
    errors = [e for e in schema_errors(doc.data) if e.validator != "required"]
    return [p for e in errors for p in _schema_problems(e, [doc])]


def _check_spec(
    doc: YamlDocument, layers: list[YamlDocument], inventory_dir: Path, schema_errors: SchemaErrors
) -> list[Problem]:
    problems = _schema_check(doc, layers, schema_errors)
    if not problems:
        problems = _semantic_problems(_merged(layers), doc, layers, inventory_dir)
    return problems


def _schema_check(
    doc: YamlDocument, layers: list[YamlDocument], schema_errors: SchemaErrors
) -> list[Problem]:
    """What the schema finds wrong with the spec merged over its defaults."""
    if not isinstance(doc.data, dict):
        return [Problem(doc.locate([]), [], "expected a mapping of spec keys")]
    errors = sorted(schema_errors(_merged(layers)), key=lambda e: list(map(str, e.path)))
    return [p for e in errors for p in _schema_problems(e, layers)]


def _merged(layers: list[YamlDocument]) -> Any:
    """The spec (the first layer) over its defaults (the second, when a mapping)."""
    defaults = layers[1].data if len(layers) > 1 and isinstance(layers[1].data, dict) else {}
    return _merge(defaults, layers[0].data)


@cache
def _spec_validator() -> jsonschema.Draft7Validator:
    import jsonschema  # (not at the top: a plan imports it in a child process only)

    schema = json.loads((schema_dir() / SPEC_SCHEMA).read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema)


def _schema_errors(data: Any) -> Iterator[jsonschema.ValidationError]:
    return _spec_validator().iter_errors(data)


def _no_schema_errors(data: Any) -> Iterator[jsonschema.ValidationError]:
    """What the schema says of data it was checked against already (in a child process)."""
    return iter(())


def _locate(
    layers: Iterable[YamlDocument], path: JsonPath, *, key: bool = False
) -> Position | None:
    """The position of ``path`` in the first layer (spec before defaults) that writes it."""
    for layer in layers:
        where = layer.locate(path, key=key)
        if where is not None:
            return where
    return None


_TYPE_NAMES = {
    "array": "a list",
    "object": "a mapping",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _describe(value: Any) -> str:
    for kind, python in (
        ("boolean", bool),
        ("integer", int),
        ("number", float),
        ("string", str),
        ("array", list),
        ("object", dict),
    ):
        if isinstance(value, python):
            return _TYPE_NAMES[kind]
    return _TYPE_NAMES["null"]


def _schema_problems(
    error: jsonschema.ValidationError, layers: list[YamlDocument]
) -> list[Problem]:
    """Turn one jsonschema error into messages a spec author can act on, at the right line."""
    path = list(error.absolute_path)
    schema: Any = error.schema
    instance: Any = error.instance
    expected: Any = error.validator_value
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unknown = [k for k in instance if k not in allowed]
        problems = []
        for key in unknown:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(allowed)}"
            problems.append(
                Problem(
                    _locate(layers, [*path, key], key=True),
                    [*path, key],
                    f"unknown key '{key}'{hint}",
                )
            )
        return problems
    if error.validator == "required":
        missing = str(error.message).split("'")[1]
        where = next((w for w in (layer.locate_mapping(path) for layer in layers) if w), None)
        return [Problem(where, path, f"missing required key '{missing}'")]
    if error.validator == "pattern" and path[-2:-1] == ["servers"]:
        message = f"{instance!r} is not an ldap://host[:port] or ldaps://host[:port] URL"
        return [Problem(_locate(layers, path), path, message)]
    if error.validator == "pattern" and path[-2:] == ["schedule", "every"]:
        message = f"{instance!r} is not an interval like 30m, 6h or 1d"
        return [Problem(_locate(layers, path), path, message)]
    if error.validator == "pattern" and path[-2:] == ["webhook", "url"]:
        message = f"{instance!r} is not an http:// or https:// URL"
        return [Problem(_locate(layers, path), path, message)]
    if error.validator == "pattern" and path[:2] == ["notify", "email"]:
        return [Problem(_locate(layers, path), path, f"{instance!r} is not a mail address")]
    if error.validator == "anyOf" and path[-2:-1] == ["headers"]:
        message = f"expected a string or {{env: VAR}} / {{file: PATH}}, got {_describe(instance)}"
        return [Problem(_locate(layers, path), path, message)]
    if error.validator == "type" and path[-1:] == ["password"]:
        message = "inline passwords are not allowed: write {env: VAR} or {file: PATH}"
        return [Problem(_locate(layers, path), path, message)]
    if error.validator == "type":
        wanted = expected
        wanted_names = [wanted] if isinstance(wanted, str) else list(wanted)
        expected = " or ".join(_TYPE_NAMES.get(w, w) for w in wanted_names)
        message = f"expected {expected}, got {_describe(instance)} ({instance!r})"
        return [Problem(_locate(layers, path), path, message)]
    if error.validator == "enum":
        choices = [str(c) for c in expected]
        close = difflib.get_close_matches(str(instance), choices, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        message = f"{instance!r} is not one of {', '.join(choices)}{hint}"
        return [Problem(_locate(layers, path), path, message)]
    if error.validator == "pattern" and path and "attribute" in str(schema.get("description")):
        message = f"{instance!r} is not an LDAP attribute name"
        return [Problem(_locate(layers, path), path, message)]
    return [Problem(_locate(layers, path), path, error.message)]


def _semantic_problems(
    merged: Mapping[str, Any], doc: YamlDocument, layers: list[YamlDocument], inventory_dir: Path
) -> list[Problem]:
    """What the schema cannot say: names match, filters parse, domains and files are real."""
    problems: list[Problem] = []

    def add(path: JsonPath, message: str) -> None:
        problems.append(Problem(_locate(layers, path), path, message))

    domain = merged["domain"]
    if domain_problem := _domain_name_problem(domain):
        add(["domain"], domain_problem)
    elif doc.file.stem.lower() != domain.lower():
        add(
            ["domain"],
            f"domain '{domain}' does not match the file name; "
            f"rename the file to {domain.lower()}.yaml",
        )
    for index, alias in enumerate(merged.get("domain_aliases", [])):
        if alias_problem := _domain_name_problem(alias):
            add(["domain_aliases", index], alias_problem)
        elif alias.lower() == domain.lower():
            add(["domain_aliases", index], f"'{alias}' is the domain itself")

    managed = {_loose_domain(d) for d in (domain, *merged.get("domain_aliases", []))}
    for index, address in enumerate(merged.get("protected", [])):
        if _loose_domain(address.rsplit("@", 1)[-1]) not in managed:
            add(
                ["protected", index],
                f"protected address '{address}' is not in {', '.join(sorted(managed))}; "
                "a sync never touches it anyway",
            )

    flavor = merged["directory"].get("flavor", DEFAULT_FLAVOR)
    users = {**FLAVOR_DEFAULTS[flavor], **merged.get("users", {})}
    filters: list[tuple[JsonPath, str | None]] = [
        (["users", "filter"], users["filter"]),
        (["users", "disabled_filter"], users.get("disabled_filter")),
        (["groups", "filter"], merged.get("groups", {}).get("filter")),
    ]
    for path, text in filters:
        if text is not None and (problem := _filter_problem(text)):
            add(path, problem)
    member_filter = merged.get("groups", {}).get("member_filter")
    if member_filter is not None:
        if "{member}" not in member_filter:
            add(["groups", "member_filter"], "member_filter must contain {member}")
        elif problem := _filter_problem(member_filter.replace("{member}", "x")):
            add(["groups", "member_filter"], problem)
        elif _filter_problem(member_filter.replace("{member}", "*")):
            # All names are looked up in one search with {member} as "*".
            add(
                ["groups", "member_filter"],
                "{member} may stand only for a value of '=' (uid={member}, cn=grp-{member})",
            )
    for key in ("rules", "default_rules"):
        for index, rule in enumerate(merged.get(key, [])):
            for field, message in rule_problems(Rule(**rule)):
                add([key, index, field], message)

    for path, message in automation_problems(merged, inventory_dir):
        add(path, message)
    problems += _directory_problems(merged["directory"], layers, inventory_dir)
    return problems


def _filter_problem(text: str) -> str | None:
    try:
        parse_filter(text)
    except FilterSyntaxError as exc:
        return f"invalid LDAP filter: {exc.message}"
    return None


def _directory_problems(
    directory: Mapping[str, Any], layers: list[YamlDocument], inventory_dir: Path
) -> list[Problem]:
    problems: list[Problem] = []

    def add(key: str, message: str) -> None:
        path = ["directory", key] if key in directory else ["directory"]
        problems.append(Problem(_locate(layers, path), path, message))

    ldif, servers = directory.get("ldif"), directory.get("servers")
    if ldif and servers:
        add("ldif", "directory has both 'ldif' and 'servers'; keep one of them")
    elif not ldif and not servers:
        add("servers", "directory needs 'servers' (LDAP URLs) or 'ldif' (an export)")
    if ldif and not (inventory_dir / ldif).is_file():
        add("ldif", f"LDIF file {inventory_dir / ldif} does not exist")
    ca_file = directory.get("ca_file")
    if ca_file and not (inventory_dir / ca_file).is_file():
        add("ca_file", f"CA file {inventory_dir / ca_file} does not exist")
    if servers and directory.get("tls") == "starttls":
        ldaps = [u for u in servers if u.lower().startswith("ldaps://")]
        if ldaps:
            add("tls", f"tls: starttls does not go with {ldaps[0]} (ldaps:// is TLS already)")
    if directory.get("bind_dn") and "password" not in directory:
        add("bind_dn", "bind_dn needs a password: {env: VAR} or {file: PATH}")
    return problems


def _loose_domain(name: str) -> str:
    """A domain normalised when it can be (an invalid one is reported on its own)."""
    try:
        return normalize_domain(name)
    except UnicodeError:
        return name.lower()


def _domain_name_problem(name: str) -> str | None:
    """Why ``name`` is not a usable mail domain, or None when it is."""
    try:
        ascii_name = normalize_domain(name)
    except UnicodeError:
        return f"'{name}' is not a valid domain name"
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or len(labels) < 2 or not all(_DOMAIN_LABEL.match(x) for x in labels):
        return f"'{name}' is not a valid domain name (expected something like example.com)"
    return None
