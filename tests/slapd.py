"""Run a real, private OpenLDAP slapd for integration tests (no mocks).

Configuration is cn=config (slapd-config(5)) written as one LDIF and loaded
offline with ``slapadd -n0 -F <confdir>`` -- the same way Debian's own slapd
postinst builds /etc/ldap/slapd.d. slapd.conf still works in 2.5 but is
deprecated upstream, and cn=config lets a running test change limits or ACLs
with ldapmodify as ``config_dn`` instead of restarting slapd.

What later tests can rely on:
* suffix ``dc=example,dc=com`` (created by the helper), rootdn ``bind_dn``.
  The rootdn BYPASSES every limit and ACL in OpenLDAP, so anything that tests
  size limits or paging must bind as ``READER_DN``/``READER_PASSWORD``
  (created by the helper; the ACL lets any authenticated DN read everything
  except userPassword). Anonymous users can only bind.
* Without ``sizelimit`` OpenLDAP's default (500 entries) applies to non-root
  binds.
* A small AD-like schema (``AD_SCHEMA_LDIF``; OIDs under 1.3.6.1.4.1.55555
  are test-only, never use them in a real directory). ``user`` is AUXILIARY so
  it mixes with person/inetOrgPerson. proxyAddresses compares case-insensitively
  (as in AD), so "SMTP:a@x" and "smtp:a@x" on one entry are duplicate values.
  objectCategory is a plain case-insensitive string: AD expands
  ``(objectCategory=person)`` server-side, OpenLDAP cannot, so test entries store
  the short name. OpenLDAP knows AD's bitwise matching rules
  (1.2.840.113556.1.4.803/804) for userAccountControl filters. For OpenLDAP-style
  mail sites: ``mailAlternateAddress`` and an AUXILIARY ``mailRecipient`` class (mail,
  mailAlternateAddress) that lets a groupOfNames carry addresses.
* LDAPS and StartTLS use a per-instance test CA (``ca_file``); the server
  certificate is for 127.0.0.1 and localhost.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

SCHEMA_DIR = Path(os.environ.get("SLAPD_SCHEMA_DIR", "/etc/ldap/schema"))
MODULE_DIR = Path(os.environ.get("SLAPD_MODULE_DIR", "/usr/lib/ldap"))
BASE_DN = "dc=example,dc=com"
ADMIN_DN = f"cn=admin,{BASE_DN}"
CONFIG_DN = "cn=admin,cn=config"
READER_DN = f"cn=reader,{BASE_DN}"
READER_PASSWORD = "reader-secret"
INSTALL_HINT = "run scripts/install-test-deps.sh to install slapd, ldap-utils and openssl"

_STR = "SYNTAX 1.3.6.1.4.1.1466.115.121.1.15"  # Directory String
_CI = "EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch"
_INT = "EQUALITY integerMatch ORDERING integerOrderingMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27"
AD_SCHEMA_LDIF = f"""\
dn: cn=adlike,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: adlike
olcObjectIdentifier: adTest 1.3.6.1.4.1.55555
olcAttributeTypes: ( adTest:1.1 NAME 'proxyAddresses' {_CI} {_STR} )
olcAttributeTypes: ( adTest:1.2 NAME 'userAccountControl' {_INT} SINGLE-VALUE )
olcAttributeTypes: ( adTest:1.3 NAME 'sAMAccountName' {_CI} {_STR} SINGLE-VALUE )
olcAttributeTypes: ( adTest:1.4 NAME 'userPrincipalName' {_CI} {_STR} SINGLE-VALUE )
olcAttributeTypes: ( adTest:1.5 NAME 'objectGUID' EQUALITY octetStringMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
olcAttributeTypes: ( adTest:1.6 NAME 'objectCategory' {_CI} {_STR} SINGLE-VALUE )
olcAttributeTypes: ( adTest:1.7 NAME 'groupType' {_INT} SINGLE-VALUE )
olcAttributeTypes: ( adTest:1.8 NAME 'mailAlternateAddress' EQUALITY caseIgnoreIA5Match
  SUBSTR caseIgnoreIA5SubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )
olcObjectClasses: ( adTest:2.1 NAME 'user' AUXILIARY MAY ( proxyAddresses $
  userAccountControl $ sAMAccountName $ userPrincipalName $ objectGUID $
  objectCategory $ mail $ displayName $ givenName ) )
olcObjectClasses: ( adTest:2.2 NAME 'group' SUP top STRUCTURAL MUST cn MAY (
  member $ mail $ description $ proxyAddresses $ sAMAccountName $ objectGUID $
  objectCategory $ groupType $ displayName ) )
olcObjectClasses: ( adTest:2.3 NAME 'mailRecipient' AUXILIARY MAY ( mail $
  mailAlternateAddress ) )
"""


def free_port() -> int:
    """A port that was free a moment ago (start() retries if it is taken)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_tool(name: str) -> str:
    # slapd/slapadd live in /usr/sbin, which a non-root PATH often lacks.
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        raise FileNotFoundError(f"{name} not found; {INSTALL_HINT}")
    return path


def _run(args: Sequence[str], stdin: str | None = None) -> str:
    # LDAPNOINIT: ignore /etc/ldap/ldap.conf and ~/.ldaprc of whoever runs tests.
    env = {**os.environ, "LDAPNOINIT": "1"}
    proc = subprocess.run(list(args), input=stdin, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return proc.stdout


def _openssl(*args: str | Path) -> None:
    _run([find_tool("openssl"), *map(str, args)])


# EC P-256 keys: generated in milliseconds, unlike RSA.
_NEW_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_CA_EXT = ["-addext", "basicConstraints=critical,CA:TRUE"]
_CA_EXT += ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]


def make_ca(directory: Path, name: str = "ca") -> Path:
    """Self-signed test CA in ``directory``; returns its certificate path."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    args = ["req", "-x509", "-days", "3650", "-subj", f"/CN=reconciler test {name}"]
    _openssl(*args, *_CA_EXT, *_NEW_EC_KEY, "-keyout", key, "-out", cert)
    return cert


def make_server_cert(directory: Path, ca: Path) -> tuple[Path, Path]:
    """Server cert for 127.0.0.1/localhost signed by ``ca``; returns (cert, key)."""
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    # SKI/AKI and serverAuth keep strict verifiers (Python 3.13's
    # VERIFY_X509_STRICT) happy; the SAN is what hostname checks look at.
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    _openssl("req", "-new", *_NEW_EC_KEY, "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr)
    serial = f"0x{secrets.token_hex(8)}"
    signing = ["-CA", str(ca), "-CAkey", str(ca.with_suffix(".key")), "-set_serial", serial]
    _openssl("x509", "-req", "-days", "825", *signing, "-extfile", ext, "-in", csr, "-out", cert)
    return cert, key


class SlapdServer:
    """A private slapd in ``directory``; usable as a context manager."""

    def __init__(
        self,
        directory: Path,
        *,
        sizelimit: str | None = None,
        limits: Sequence[str] = (),
        password: str = "admin-secret",
        debug: str = "none",
    ) -> None:
        """``sizelimit``: olcSizeLimit of the database, e.g. "10" or
        "size.soft=10 size.hard=10 size.pr=5 size.prtotal=unlimited".
        ``limits``: olcLimits values. ``debug``: slapd -d level; "none" logs
        only errors to ``log_file``, "stats" also every operation."""
        self.directory = Path(directory)
        self.sizelimit, self.limits, self.debug = sizelimit, tuple(limits), debug
        # Connection facts for tests (treat as read-only).
        self.base_dn, self.bind_dn, self.config_dn = BASE_DN, ADMIN_DN, CONFIG_DN
        self.password = password
        self.ca_file = self.directory / "tls" / "ca.pem"
        self.log_file = self.directory / "slapd.log"
        self.port = self.ldaps_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepared = False

    @property
    def ldap_url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _config_ldif(self, cert: Path, key: Path) -> str:
        d = self.directory
        db_limits = f"olcSizeLimit: {self.sizelimit}\n" if self.sizelimit else ""
        db_limits += "".join(f"olcLimits: {{{i}}}{v}\n" for i, v in enumerate(self.limits))
        schemas = "".join(
            f"include: file://{SCHEMA_DIR}/{s}.ldif\n"
            for s in ("core", "cosine", "nis", "inetorgperson")
        )
        return f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {d}/slapd.pid
olcArgsFile: {d}/slapd.args
olcTLSCACertificateFile: {self.ca_file}
olcTLSCertificateFile: {cert}
olcTLSCertificateKeyFile: {key}

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {MODULE_DIR}
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{schemas}
{AD_SCHEMA_LDIF}
dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcRootDN: {CONFIG_DN}
olcRootPW: {self.password}

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {BASE_DN}
olcDbDirectory: {d}/db
olcRootDN: {ADMIN_DN}
olcRootPW: {self.password}
olcDbMaxSize: 17179869184
olcDbIndex: objectClass eq
olcDbIndex: cn,uid,mail,sAMAccountName,proxyAddresses eq
olcDbIndex: member eq
olcAccess: {{0}}to attrs=userPassword by anonymous auth by * none
olcAccess: {{1}}to * by users read by * none
{db_limits}"""

    def _prepare(self) -> None:
        """Certificates, cn=config and the base entries; once per instance."""
        if self._prepared:
            return
        for sub in ("slapd.d", "db"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        ca = make_ca(self.directory / "tls")
        cert, key = make_server_cert(self.directory / "tls", ca)
        ldif = self.directory / "config.ldif"
        ldif.write_text(self._config_ldif(cert, key))
        _run([find_tool("slapadd"), "-n0", "-F", str(self.directory / "slapd.d"), "-l", str(ldif)])
        self._prepared = True
        self.load_ldif(f"""\
dn: {BASE_DN}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: {READER_DN}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: reader
description: non-root bind user: the rootdn bypasses size limits
userPassword: {READER_PASSWORD}
""")

    def slapadd(self, ldif_path: Path, quick: bool = True) -> None:
        """Bulk-load an LDIF file offline (fast); only while stopped."""
        if self.running:
            raise RuntimeError("slapadd needs a stopped slapd; use ldapadd()")
        self._prepare()
        confdir = str(self.directory / "slapd.d")
        args = [find_tool("slapadd"), "-F", confdir, "-b", BASE_DN, "-l", str(ldif_path)]
        _run(args + (["-q"] if quick else []))

    def ldapmodify(self, ldif: str, *, add: bool = False, config: bool = False) -> None:
        """Apply LDIF over ldap:// as the rootdn (as ``config_dn`` with
        config=True, to change cn=config live); only while running."""
        if not self.running:
            raise RuntimeError("slapd is not running; use slapadd()")
        user = CONFIG_DN if config else ADMIN_DN
        args = ["-x", "-H", self.ldap_url, "-D", user, "-w", self.password]
        _run([find_tool("ldapmodify"), *(["-a"] if add else []), *args], stdin=ldif)

    def ldapadd(self, ldif: str) -> None:
        self.ldapmodify(ldif, add=True)

    def load_ldif(self, ldif: str) -> None:
        """Add entries: ldapadd if running, else slapadd from a temp file."""
        if self.running:
            self.ldapadd(ldif)
            return
        self._prepare()
        with tempfile.NamedTemporaryFile("w", suffix=".ldif", dir=self.directory) as f:
            f.write(ldif)
            f.flush()
            self.slapadd(Path(f.name))

    def start(self, timeout: float = 15.0) -> None:
        if self.running:
            return
        self._prepare()
        for _attempt in range(3):  # a "free" port may be taken before slapd binds it
            if not self.port or _attempt:
                self.port, self.ldaps_port = free_port(), free_port()
            if self._start_once(timeout):
                return
            if "Address already in use" not in self._log_text():
                break
        raise RuntimeError(f"slapd did not start:\n{self._log_text()}")

    def _log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def _start_once(self, timeout: float) -> bool:
        # -d keeps slapd in the foreground so we own its pid. Output goes to a
        # file, not a pipe: an unread pipe fills up and blocks slapd.
        urls = f"{self.ldap_url}/ {self.ldaps_url}/"
        confdir = str(self.directory / "slapd.d")
        args = [find_tool("slapd"), "-d", self.debug, "-F", confdir, "-h", urls]
        # setpriv (util-linux) sets PR_SET_PDEATHSIG and execs slapd under the
        # same pid: if the test process dies without stop(), slapd gets SIGTERM
        # instead of lingering. (Caveat: "parent" is the thread that started it.)
        if setpriv := shutil.which("setpriv"):
            args = [setpriv, "--pdeathsig", "TERM", *args]
        with self.log_file.open("wb") as log:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            if all(_accepts(p) for p in (self.port, self.ldaps_port)):
                return True
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"slapd not listening after {timeout}s:\n{self._log_text()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (slapd shuts down cleanly and syncs MDB), then SIGKILL."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> SlapdServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
