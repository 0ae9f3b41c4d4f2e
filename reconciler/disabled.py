"""Which directory entries are disabled accounts: one spec key, ``users.disabled_filter``.

The filter is RFC 4515, evaluated on the entry by our own evaluator (ldapfilter), so it works the
same for an LDIF export and a live server: Active Directory's default is
``(userAccountControl:1.2.840.113556.1.4.803:=2)`` (bit 2, ACCOUNTDISABLE), an OpenLDAP site
writes e.g. ``(nsAccountLock=TRUE)`` or ``(pwdAccountLockedTime=*)``. Both the mapping and login
checks ask :func:`is_disabled`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

from reconciler.directory import Entry, Value
from reconciler.ldapfilter import parse_filter
from reconciler.spec import UsersSpec


class DisabledMatcher:
    """The parsed filter, with the answers for a filter that reads a single attribute (the
    usual case: userAccountControl, nsAccountLock) remembered per value: the mapping asks for
    every entry, and a directory has only a handful of distinct userAccountControl values."""

    _MAX_REMEMBERED = 4096

    def __init__(self, disabled_filter: str) -> None:
        self.filter = parse_filter(disabled_filter)
        read = self.filter.attributes()
        self._single = next(iter(read)) if len(read) == 1 else None
        self._answers: dict[tuple[Value, ...], bool] = {}

    def matches(self, attributes: Mapping[str, Sequence[Value]]) -> bool:
        if self._single is None:
            return self.filter.matches(attributes)
        key = tuple(attributes.get(self._single, ()))
        answer = self._answers.get(key)
        if answer is None:
            answer = self.filter.matches(attributes)
            if len(self._answers) < self._MAX_REMEMBERED:
                self._answers[key] = answer
        return answer


@lru_cache(maxsize=64)
def disabled_matcher(disabled_filter: str) -> DisabledMatcher:
    """The matcher of a filter text, made once per text."""
    return DisabledMatcher(disabled_filter)


def is_disabled(entry: Entry, users: UsersSpec) -> bool:
    """Whether ``entry`` is a disabled account by ``users.disabled_filter`` (never, without one).

    The entry must carry the attributes the filter reads: ``users.attributes()`` includes them.
    ``users.disabled`` (what to do with such an account) is the caller's business."""
    if users.disabled_filter is None:
        return False
    return disabled_matcher(users.disabled_filter).matches(entry.attributes)
