"""Which directory entries are disabled accounts: one spec key, ``users.disabled_filter``.

The filter is RFC 4515, evaluated on the entry by our own evaluator (ldapfilter), so it works the
same for an LDIF export and a live server: Active Directory's default is
``(userAccountControl:1.2.840.113556.1.4.803:=2)`` (bit 2, ACCOUNTDISABLE), an OpenLDAP site
writes e.g. ``(nsAccountLock=TRUE)`` or ``(pwdAccountLockedTime=*)``. Both the mapping and login
checks ask :func:`is_disabled`.
"""

from __future__ import annotations

from functools import lru_cache

from reconciler.directory import Entry
from reconciler.ldapfilter import Filter, parse_filter
from reconciler.spec import UsersSpec


@lru_cache(maxsize=64)
def disabled_matcher(disabled_filter: str) -> Filter:
    """The parsed filter, parsed once per text (the mapping asks for every entry)."""
    return parse_filter(disabled_filter)


def is_disabled(entry: Entry, users: UsersSpec) -> bool:
    """Whether ``entry`` is a disabled account by ``users.disabled_filter`` (never, without one).

    The entry must carry the attributes the filter reads: ``users.attributes()`` includes them.
    ``users.disabled`` (what to do with such an account) is the caller's business."""
    if users.disabled_filter is None:
        return False
    return disabled_matcher(users.disabled_filter).matches(entry.attributes)
