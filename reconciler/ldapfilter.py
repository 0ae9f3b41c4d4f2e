"""Strict RFC 4515 LDAP search filters: parsing with exact error positions, and evaluation against
one entry of an LDIF export, so that an offline directory answers a filter as a server would.

Hand-written because ldap3's ``parse_filter`` accepts invalid filters (``(=a)``, ``(c n=a)``, the
bad escape ``\\zz``) and reports no position, and the PyPI ``ldap-filter`` package loses escapes
(``\\2a`` becomes a wildcard), compares attribute names case-sensitively and cannot evaluate
extensible matches.

Decisions: ``(&)`` and ``(|)`` (RFC 4526 absolute true/false) are rejected, since in a spec they
are a mistake and Active Directory does not accept them; no whitespace is allowed outside values
except around the whole filter; empty substring parts (``a**b``) are allowed, as in the ABNF, and
ignored. A missing attribute makes an item False and NOT simply negates it, so ``(!(a=x))`` is True
when ``a`` is absent, as servers answer in practice. ``;options`` are ignored for lookup.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import AnyStr, ClassVar, NoReturn

from reconciler.errors import ConfigError, FilterSyntaxError

Value = str | bytes
Entry = Mapping[str, Sequence[Value]]

_ESCAPES = {"*": r"\2a", "(": r"\28", ")": r"\29", "\\": r"\5c", "\0": r"\00"}
_HEX = frozenset("0123456789abcdefABCDEF")
# RFC 4512 oid: a descr (letter, then letters, digits, hyphens) or a numeric OID without
# leading zeros; options are keychar runs after ';'.
_OID = re.compile(r"[A-Za-z][A-Za-z0-9-]*|(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))+")
_OPTION = re.compile(r"[A-Za-z0-9-]+")
_SPACES = re.compile(r"\s+")
_INTEGER = re.compile(r"-?[0-9]+")
_UINT64 = (1 << 64) - 1
_MAX_DEPTH = 100  # nobody writes deeper filters by hand; the limit keeps recursion bounded


def escape_filter_value(value: str) -> str:
    """Escape ``* ( ) \\`` and NUL as RFC 4515 requires; every other character is kept."""
    return "".join(_ESCAPES.get(ch, ch) for ch in value)


def parse_filter(text: str) -> Filter:
    """Parse one parenthesised RFC 4515 filter (whitespace around it allowed, nothing else).

    Raises FilterSyntaxError whose ``position`` is the 0-based offset of the first problem.
    """
    return _Parser(text).parse()


class Filter(ABC):
    """A parsed filter; the subclasses are frozen dataclasses that compare by value."""

    __slots__ = ()

    @abstractmethod
    def matches(self, entry: Entry) -> bool:
        """Whether ``entry`` (lower-case attribute names) satisfies the filter; raises
        ConfigError for a matching rule that an LDIF export cannot evaluate."""

    @abstractmethod
    def attributes(self) -> frozenset[str]:
        """The lower-cased attribute names, without options, that the filter reads."""


@dataclass(frozen=True, slots=True)
class _Compound(Filter):
    filters: tuple[Filter, ...]
    _every: ClassVar[bool]

    def matches(self, entry: Entry) -> bool:
        # No short-circuit: an unsupported matching rule must fail on the first entry whatever
        # that entry contains, not only on entries that happen to reach it.
        results = [f.matches(entry) for f in self.filters]
        return all(results) if self._every else any(results)

    def attributes(self) -> frozenset[str]:
        return frozenset().union(*(f.attributes() for f in self.filters))


@dataclass(frozen=True, slots=True)
class And(_Compound):
    _every = True


@dataclass(frozen=True, slots=True)
class Or(_Compound):
    _every = False


@dataclass(frozen=True, slots=True)
class Not(Filter):
    filter: Filter

    def matches(self, entry: Entry) -> bool:
        return not self.filter.matches(entry)

    def attributes(self) -> frozenset[str]:
        return self.filter.attributes()


@dataclass(frozen=True, slots=True)
class _Item(Filter):
    """A test on one attribute: true when any of its values passes ``_test``."""

    attribute: str

    def matches(self, entry: Entry) -> bool:
        return any(self._test(v) for v in _values(entry, self.attribute))

    def attributes(self) -> frozenset[str]:
        return frozenset({_key(self.attribute)})

    @abstractmethod
    def _test(self, value: Value) -> bool: ...


@dataclass(frozen=True, slots=True)
class Present(_Item):
    def _test(self, value: Value) -> bool:
        return True  # reached only when the attribute has a value


@dataclass(frozen=True, slots=True)
class _Assertion(_Item):
    value: Value


@dataclass(frozen=True, slots=True)
class Equality(_Assertion):
    def _test(self, value: Value) -> bool:
        return _equal(value, self.value)


@dataclass(frozen=True, slots=True)
class Approx(_Assertion):
    def _test(self, value: Value) -> bool:
        return _equal(value, self.value)  # servers approximate mostly by equality


@dataclass(frozen=True, slots=True)
class GreaterOrEqual(_Assertion):
    def _test(self, value: Value) -> bool:
        return _order(value, self.value) >= 0


@dataclass(frozen=True, slots=True)
class LessOrEqual(_Assertion):
    def _test(self, value: Value) -> bool:
        return _order(value, self.value) <= 0


@dataclass(frozen=True, slots=True)
class Substrings(_Item):
    """``attr=initial*middle*...*final``; ``middle`` holds the RFC's "any" parts, in order."""

    initial: Value | None
    middle: tuple[Value, ...]
    final: Value | None

    def _test(self, value: Value) -> bool:
        parts = [self.initial, *self.middle, self.final]
        texts = [p for p in parts if not isinstance(p, bytes)]
        if isinstance(value, str) and len(texts) == len(parts):
            last = len(parts) - 1
            folded = [
                p if p is None else _fold_part(p, i == 0, i == last) for i, p in enumerate(texts)
            ]
            return _substrings_in(_fold(value), folded)
        return _substrings_in(_bytes(value), [p if p is None else _bytes(p) for p in parts])


@dataclass(frozen=True, slots=True)
class Extensible(Filter):
    """``attr:dn:rule:=value``; ``attribute`` or ``rule`` may be None, never both."""

    attribute: str | None
    rule: str | None
    value: Value
    dn_attributes: bool = False

    def matches(self, entry: Entry) -> bool:
        test = _RULES.get(None if self.rule is None else self.rule.lower())
        if test is None or self.attribute is None or self.dn_attributes:
            what = "':dn:'" if self.dn_attributes else f"matching rule {self.rule}"
            what += "" if self.attribute or self.dn_attributes else " without an attribute"
            raise ConfigError(
                f"{what} cannot be evaluated on an LDIF export; "
                "use a live directory or another filter"
            )
        return any(test(v, self.value) for v in _values(entry, self.attribute))

    def attributes(self) -> frozenset[str]:
        return frozenset() if self.attribute is None else frozenset({_key(self.attribute)})


def _key(attribute: str) -> str:
    return attribute.split(";", 1)[0].lower()


def _values(entry: Entry, attribute: str) -> Sequence[Value]:
    values = entry.get(_key(attribute), ())
    if isinstance(values, str):  # type checkers accept a str as a Sequence[str]: refuse it
        raise TypeError(f"the values of {attribute!r} must be a sequence, not a str")
    return values


def _bytes(value: Value) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _collapse(text: str) -> str:
    """caseIgnoreMatch's insignificant spaces: strip, and collapse inner runs to one space."""
    return _SPACES.sub(" ", text).strip(" ")


def _fold(text: str) -> str:
    return _collapse(text).casefold()


def _fold_part(text: str, is_initial: bool, is_final: bool) -> str:
    """Fold a substring part, stripping only the outer side of initial and final: the space in
    ``(cn=John *)`` is significant ("John Smith" matches, "Johnny" does not)."""
    text = _SPACES.sub(" ", text)
    text = text.lstrip(" ") if is_initial else text
    return (text.rstrip(" ") if is_final else text).casefold()


def _substrings_in(value: AnyStr, parts: Sequence[AnyStr | None]) -> bool:
    """Whether initial, the middle parts in order, and final occur in value without overlap."""
    initial, middle, final = parts[0], parts[1:-1], parts[-1]
    if initial and not value.startswith(initial):
        return False
    pos = len(initial) if initial else 0
    for part in middle:
        found = value.find(part, pos) if part else pos
        if found < 0:
            return False
        pos = found + (len(part) if part else 0)
    return not final or (len(value) - len(final) >= pos and value.endswith(final))


def _equal(value: Value, assertion: Value, fold: Callable[[str], str] = _fold) -> bool:
    if isinstance(value, str) and isinstance(assertion, str):
        return fold(value) == fold(assertion)
    return _bytes(value) == _bytes(assertion)  # binary values compare byte-exact


def _integer(value: Value) -> int | None:
    try:
        text = (value if isinstance(value, str) else value.decode("ascii")).strip()
        return int(text) if _INTEGER.fullmatch(text) else None
    except ValueError:  # non-ASCII bytes, or more digits than int() accepts
        return None


def _order(value: Value, assertion: Value) -> int:
    """The sign of ``value - assertion``: numeric for two integers, else case-ignoring text."""
    left, right = _integer(value), _integer(assertion)
    if left is not None and right is not None:
        return (left > right) - (left < right)
    if isinstance(value, str) and isinstance(assertion, str):
        a, b = _fold(value), _fold(assertion)
        return (a > b) - (a < b)
    x, y = _bytes(value), _bytes(assertion)
    return (x > y) - (x < y)


def _bits(value: Value, assertion: Value, test: Callable[[int, int], bool]) -> bool:
    left, right = _integer(value), _integer(assertion)
    # AD stores flags as signed integers (groupType is negative): compare two's-complement bits.
    return left is not None and right is not None and test(left & _UINT64, right & _UINT64)


_RULES: dict[str | None, Callable[[Value, Value], bool]] = {
    None: _equal,
    "caseignorematch": _equal,
    "2.5.13.2": _equal,
    "caseexactmatch": lambda v, a: _equal(v, a, _collapse),
    "2.5.13.5": lambda v, a: _equal(v, a, _collapse),
    "1.2.840.113556.1.4.803": lambda v, a: _bits(v, a, lambda x, y: x & y == y),  # all bits
    "1.2.840.113556.1.4.804": lambda v, a: _bits(v, a, lambda x, y: x & y != 0),  # any bit
}
_OPERATORS: dict[str, type[_Assertion]] = {"~": Approx, ">": GreaterOrEqual, "<": LessOrEqual}


def _decode(raw: bytes) -> Value:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # escaped binary, such as an objectGUID, stays bytes
        return raw


class _Parser:
    """A cursor over the filter text; each method consumes one grammar rule or raises."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> Filter:
        self._skip_spaces()
        node = self._filter(0)
        self._skip_spaces()
        if self.pos < len(self.text):
            self._fail(f"unexpected {self._found()} after the end of the filter")
        return node

    def _fail(self, message: str, position: int | None = None) -> NoReturn:
        raise FilterSyntaxError(message, self.text, self.pos if position is None else position)

    def _peek(self, offset: int = 0) -> str:
        """The character at the cursor plus offset, or '' past the end."""
        return self.text[self.pos + offset : self.pos + offset + 1]

    def _found(self) -> str:
        ch = self._peek()
        if not ch:
            return "end of filter"
        return "a space (spaces are only allowed inside values)" if ch.isspace() else repr(ch)

    def _skip_spaces(self) -> None:
        while self._peek().isspace():
            self.pos += 1

    def _filter(self, depth: int) -> Filter:
        opened = self.pos
        if self._peek() != "(":
            self._fail(f"expected '(' to start a filter, found {self._found()}")
        if depth >= _MAX_DEPTH:
            self._fail(f"filters are nested deeper than {_MAX_DEPTH} levels")
        self.pos += 1
        kind = self._peek()
        node: Filter
        if kind in ("&", "|"):
            self.pos += 1
            if self._peek() == ")":
                self._fail(
                    f"'{kind}' needs at least one sub-filter; the RFC 4526 absolute "
                    "true/false filters (&) and (|) are not accepted"
                )
            children = [self._filter(depth + 1)]
            while self._peek() == "(":
                children.append(self._filter(depth + 1))
            node = And(tuple(children)) if kind == "&" else Or(tuple(children))
        elif kind == "!":
            self.pos += 1
            node = Not(self._filter(depth + 1))
        else:
            node = self._item()
        if self._peek() != ")":
            self._fail(
                f"expected ')' to close the filter opened at character {opened + 1}, "
                f"found {self._found()}"
            )
        self.pos += 1
        return node

    def _item(self) -> Filter:
        if self._peek() == ":":
            return self._extensible(None)
        attribute = self._attribute()
        op = self._peek()
        if op == ":":
            return self._extensible(attribute)
        if op == "=":
            self.pos += 1
            return self._equality_substrings_or_present(attribute)
        if op not in _OPERATORS:
            self._fail(
                "expected '=', '~=', '>=', '<=' or ':=' after attribute description "
                f"{attribute!r}, found {self._found()}"
            )
        self.pos += 1
        if self._peek() != "=":
            self._fail(f"expected '=' after '{op}', found {self._found()}")
        self.pos += 1
        return _OPERATORS[op](attribute, self._single_value(op + "="))

    def _attribute(self) -> str:
        """RFC 4512 attributedescription: an oid, then any number of ``;option``."""
        start = self.pos
        if self._peek() and self._peek() in "=~<>;":
            self._fail("empty attribute name")
        self._oid("an attribute description, '&', '|' or '!'")
        while self._peek() == ";":
            self.pos += 1
            option = _OPTION.match(self.text, self.pos)
            if option is None:
                self._fail(f"expected an attribute option after ';', found {self._found()}")
            self.pos = option.end()
        return self.text[start : self.pos]

    def _oid(self, expected: str) -> str:
        match = _OID.match(self.text, self.pos)
        if match is None and self._peek().isdigit():
            self._fail(
                "invalid numeric OID: expected dot-separated numbers without leading "
                "zeros, such as 2.5.4.3 (names start with a letter)"
            )
        if match is None:
            self._fail(f"expected {expected}, found {self._found()}")
        self.pos = match.end()
        return match.group()

    def _extensible(self, attribute: str | None) -> Filter:
        """``attr[:dn][:rule]:=value`` or ``[:dn]:rule:=value``; the cursor is on the first ':'."""
        dn_attributes = self.text[self.pos : self.pos + 3].lower() == ":dn" and self._peek(3) == ":"
        self.pos += 3 if dn_attributes else 0
        rule: str | None = None
        if self._peek(1) != "=":
            self.pos += 1
            rule = self._oid("a matching rule name or OID after ':'")
            if not self.text.startswith(":=", self.pos):
                self._fail(f"expected ':=' after matching rule {rule!r}, found {self._found()}")
        elif attribute is None:
            self._fail(
                "an extensible match without an attribute needs a matching rule, "
                "such as (:caseExactMatch:=value)"
            )
        self.pos += 2
        return Extensible(attribute, rule, self._single_value(":="), dn_attributes)

    def _single_value(self, op: str) -> Value:
        parts, stars = self._value_parts()
        if stars:
            self._fail(
                f"'*' is only allowed after '=' (substrings or presence), not after "
                f"'{op}'; write a literal star as \\2a",
                stars[0],
            )
        return _decode(parts[0])

    def _equality_substrings_or_present(self, attribute: str) -> Filter:
        parts, stars = self._value_parts()
        if not stars:
            return Equality(attribute, _decode(parts[0]))
        if parts == [b"", b""]:
            return Present(attribute)
        return Substrings(
            attribute,
            _decode(parts[0]) if parts[0] else None,
            tuple(_decode(p) for p in parts[1:-1] if p),
            _decode(parts[-1]) if parts[-1] else None,
        )

    def _value_parts(self) -> tuple[list[bytes], list[int]]:
        """Read a value up to ')' or the end: the parts between unescaped '*'s, as bytes with
        the escapes resolved, and the positions of those stars."""
        parts: list[bytes] = []
        stars: list[int] = []
        buf = bytearray()
        while (ch := self._peek()) and ch != ")":
            if ch == "*":
                stars.append(self.pos)
                parts.append(bytes(buf))
                buf.clear()
            elif ch == "\\":
                pair = self.text[self.pos + 1 : self.pos + 3]
                if len(pair) < 2 or not set(pair) <= _HEX:
                    self._fail(
                        f"invalid escape '{self.text[self.pos : self.pos + 3]}': "
                        "a backslash must be followed by two hex digits"
                    )
                buf.append(int(pair, 16))
                self.pos += 2
            elif ch in "(\0":
                name = "'('" if ch == "(" else "NUL"
                self._fail(f"unescaped {name} in a value; write it as {_ESCAPES[ch]}")
            elif "\ud800" <= ch <= "\udfff":
                self._fail("lone surrogate in a value: the filter text is not valid Unicode")
            else:
                buf += ch.encode("utf-8")
            self.pos += 1
        parts.append(bytes(buf))
        return parts, stars
