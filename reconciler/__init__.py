"""Reconciler: declarative, Git-backed sync of mail recipients from LDAP, AD or LDIF."""

__version__ = "0.1.0"
