"""Reconciler: declarative, Git-backed sync of mail recipients from LDAP, AD or LDIF."""

__version__ = "0.1.0"

# Before any other module of the package: whether the compiled modules may be used.
from reconciler import compiled as _compiled

COMPILED = _compiled.MODE
