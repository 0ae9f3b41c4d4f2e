"""Hypothesis strategies shared by the test modules."""

from __future__ import annotations

from hypothesis import strategies as st

from reconciler.recipient import Recipient


def any_recipient(text: st.SearchStrategy[str]) -> st.SearchStrategy[Recipient]:
    """Recipients of any kind with any fields set or not, their strings drawn from ``text``:
    shapes no state holds included, for what must work on every recipient."""
    return st.builds(
        Recipient,
        kind=st.sampled_from(["mailbox", "alias", "list"]),
        name=st.none() | text,
        id=st.none() | text,
        status=st.none() | st.sampled_from(["active", "disabled"]),
        target=st.none() | text,
        members=st.none() | st.lists(text, max_size=3).map(tuple),
        username=st.none() | text,
        privileges=st.none() | st.lists(text, max_size=2).map(tuple),
    )
