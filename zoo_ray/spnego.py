"""HTTP to Hadoop's daemons, with SPNEGO (Kerberos over HTTP) when a secure cluster asks.

Every REST call zoo_ray makes to the ResourceManager, a NodeManager or the NameNode goes
through :func:`hadoop_opener`. On an open cluster nothing changes. A secure one answers
``401`` with ``WWW-Authenticate: Negotiate``; the opener then sends a SPNEGO token for
``HTTP/<host>`` made from the user's Kerberos credential (the ticket cache ``kinit`` wrote,
``KRB5CCNAME``, or a client keytab, ``KRB5_CLIENT_KTNAME``) and keeps the signed
``hadoop.auth`` cookie the daemon answers with, so later calls skip the KDC.

The token comes from the system's ``libgssapi_krb5`` through ctypes: every Kerberized
gateway has that library (``kinit`` links it), while the ``gssapi`` package has no Linux
wheel and needs a compiler and ``libkrb5-dev``. Cluster hosts are never reached through
the gateway's HTTP proxy. Runs on the gateway and the driver.
"""
from __future__ import annotations

import base64
import ctypes
import ctypes.util
import http.cookiejar
import socket
import ssl
import urllib.parse
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import KerberosError, KerberosUnavailableError

__all__ = ["Credentials", "credential_lifetime", "hadoop_opener", "negotiate", "service_host",
           "verify_login"]

# OIDs, DER: 1.2.840.113554.1.2.1.4 (GSS_C_NT_HOSTBASED_SERVICE) and 1.3.6.1.5.5.2 (SPNEGO).
_NT_HOSTBASED_SERVICE = bytes.fromhex("2a864886f71201020104")
_SPNEGO = bytes.fromhex("2b0601050502")
# 1.2.840.113554.1.2.2.1 (GSS_KRB5_NT_PRINCIPAL_NAME) and 1.2.840.113554.1.2.2 (Kerberos 5).
_NT_KRB5_PRINCIPAL = bytes.fromhex("2a864886f712010202 01".replace(" ", ""))
_KRB5 = bytes.fromhex("2a864886f712010202")
_MUTUAL_AND_REPLAY = 2 | 4  # GSS_C_MUTUAL_FLAG | GSS_C_REPLAY_FLAG, as curl asks
_INITIATE = 1  # GSS_C_INITIATE
_CONTINUE_NEEDED = 1
_ROUTINE_ERROR_MASK = 0xFF << 16
_NO_CRED = 7 << 16
_CREDENTIALS_EXPIRED = 11 << 16
#: What ``gss_inquire_cred`` answers for a credential without end (a client keytab).
INDEFINITE = 0xFFFFFFFF


@dataclass(frozen=True)
class Credentials:
    """A Kerberos credential other than the process's default (``KRB5CCNAME``).

    Parameters
    ----------
    ccache : str
        The ticket cache to use, such as ``FILE:/path/krb5cc``.
    client_keytab : str, optional
        A keytab from which Kerberos gets (and renews) the ticket in ``ccache``.
    principal : str, optional
        Whose keys to use (a keytab may hold several; by default its first).
    """

    ccache: str
    client_keytab: str | None = None
    principal: str | None = None


class _KeyValue(ctypes.Structure):
    _fields_ = [("key", ctypes.c_char_p), ("value", ctypes.c_char_p)]


class _KeyValueSet(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint32), ("elements", ctypes.POINTER(_KeyValue))]


class _Buffer(ctypes.Structure):
    _fields_ = [("length", ctypes.c_size_t), ("value", ctypes.c_void_p)]


class _Oid(ctypes.Structure):
    _fields_ = [("length", ctypes.c_uint32), ("elements", ctypes.c_void_p)]


@lru_cache(maxsize=1)
def _gss() -> ctypes.CDLL:
    path = ctypes.util.find_library("gssapi_krb5") or "libgssapi_krb5.so.2"
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        raise KerberosUnavailableError(
            "The cluster wants Kerberos (SPNEGO), and this machine has no libgssapi_krb5. "
            "Install MIT Kerberos's client: apt-get install krb5-user (RHEL: dnf install "
            "krb5-workstation).") from None
    u32p, voidp = ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_void_p)
    buffer, oid = ctypes.POINTER(_Buffer), ctypes.POINTER(_Oid)
    lib.gss_import_name.argtypes = [u32p, buffer, oid, voidp]
    lib.gss_init_sec_context.argtypes = [
        u32p, ctypes.c_void_p, voidp, ctypes.c_void_p, oid, ctypes.c_uint32, ctypes.c_uint32,
        ctypes.c_void_p, buffer, voidp, buffer, u32p, u32p]
    lib.gss_acquire_cred.argtypes = [u32p, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p,
                                     ctypes.c_int, voidp, ctypes.c_void_p, u32p]
    for function in ("gss_import_name", "gss_init_sec_context", "gss_acquire_cred",
                     "gss_acquire_cred_from", "gss_inquire_cred", "gss_display_status",
                     "gss_release_buffer", "gss_release_name", "gss_release_cred",
                     "gss_delete_sec_context"):
        if not hasattr(lib, function):
            raise KerberosUnavailableError(
                f"{path} has no {function} (MIT Kerberos 1.11 or later has it). Install MIT "
                "Kerberos's client: apt-get install krb5-user (RHEL: krb5-workstation).")
        getattr(lib, function).restype = ctypes.c_uint32  # OM_uint32 status codes
    lib.gss_acquire_cred_from.argtypes = [u32p, ctypes.c_void_p, ctypes.c_uint32,
                                          ctypes.c_void_p, ctypes.c_int,
                                          ctypes.POINTER(_KeyValueSet), voidp, ctypes.c_void_p,
                                          u32p]
    lib.gss_inquire_cred.argtypes = [u32p, ctypes.c_void_p, voidp, u32p,
                                     ctypes.POINTER(ctypes.c_int), ctypes.c_void_p]
    lib.gss_display_status.argtypes = [u32p, ctypes.c_uint32, ctypes.c_int, oid, u32p, buffer]
    lib.gss_release_buffer.argtypes = [u32p, buffer]
    lib.gss_release_name.argtypes = [u32p, voidp]
    lib.gss_release_cred.argtypes = [u32p, voidp]
    lib.gss_delete_sec_context.argtypes = [u32p, voidp, ctypes.c_void_p]
    return lib


def _status_text(lib: ctypes.CDLL, major: int, minor: int) -> str:
    texts = []
    for code, kind in ((major, 1), (minor, 2)):  # GSS_C_GSS_CODE, GSS_C_MECH_CODE
        more = ctypes.c_uint32(0)
        for _ in range(8):  # each status holds a few messages; bounded all the same
            status, text = ctypes.c_uint32(), _Buffer()
            lib.gss_display_status(ctypes.byref(status), code, kind, None, ctypes.byref(more),
                                   ctypes.byref(text))
            if text.length:
                texts.append(ctypes.string_at(text.value, text.length).decode(errors="replace"))
            lib.gss_release_buffer(ctypes.byref(status), ctypes.byref(text))
            if not more.value:
                break
    return ": ".join(texts)


def _credential_error(major: int, detail: str, what: str,
                      credentials: Credentials | None = None) -> KerberosError:
    if credentials is not None and credentials.client_keytab:
        # A keytab login has no ticket to lack: whatever failed, the KDC or the keytab did.
        who = credentials.principal or "the keytab's principal"
        return KerberosError(
            f"Kerberos failed to {what} as {who} from keytab {credentials.client_keytab}: "
            f"{detail}. Check the principals it holds (`klist -kt "
            f"{credentials.client_keytab}`) and that KRB5_CONFIG (or /etc/krb5.conf) names "
            "the realm's KDC.")
    routine = major & _ROUTINE_ERROR_MASK
    keytab = ("or pass principal= and keytab= to init_spark_on_yarn (--principal and --keytab "
              "to zoo-ray)")
    if routine == _CREDENTIALS_EXPIRED or "expired" in detail.lower():
        return KerberosError(
            f"Your Kerberos ticket has expired: run `kinit` again (`kinit -R` renews one that "
            f"is still renewable), {keytab}. Kerberos said: {detail}")
    if routine == _NO_CRED or "No Kerberos credentials" in detail:
        return KerberosError(
            f"You have no Kerberos ticket: run `kinit <principal>` (or `kinit -kt <keytab> "
            f"<principal>`), {keytab}. Kerberos said: {detail}")
    return KerberosError(f"Kerberos failed to {what}: {detail}. Check `klist` and KRB5_CONFIG.")


def service_host(url: str) -> str:
    """The host in ``HTTP/<host>@REALM`` for ``url``.

    Its canonical name, as Hadoop's daemons register their principals with ``_HOST``
    (``127.0.0.1`` becomes ``localhost``, an address its host's name), and as browsers
    and Hadoop's own client ask for it.

    Parameters
    ----------
    url : str
        The daemon's URL.

    Returns
    -------
    str
        The lower-case host name (the URL's own host when no lookup answers).
    """
    host = urllib.parse.urlsplit(url).hostname or "localhost"
    try:
        return socket.gethostbyaddr(socket.gethostbyname(host))[0].lower()
    except OSError:
        return host.lower()


def _bytes_buffer(data: bytes) -> tuple[_Buffer, ctypes.Array]:
    holder = ctypes.create_string_buffer(data, len(data))
    return _Buffer(len(data), ctypes.cast(holder, ctypes.c_void_p)), holder


def _oid(der: bytes) -> tuple[_Oid, ctypes.Array]:
    holder = ctypes.create_string_buffer(der, len(der))
    return _Oid(len(der), ctypes.cast(holder, ctypes.c_void_p)), holder


def _import_name(lib: ctypes.CDLL, text: str, name_type: bytes) -> ctypes.c_void_p:
    minor, name = ctypes.c_uint32(), ctypes.c_void_p()
    buffer, _text = _bytes_buffer(text.encode())
    type_oid, _type = _oid(name_type)
    major = lib.gss_import_name(ctypes.byref(minor), ctypes.byref(buffer),
                                ctypes.byref(type_oid), ctypes.byref(name))
    if major:
        raise KerberosError(f"Cannot name {text}: {_status_text(lib, major, minor.value)}")
    return name


def _acquire(lib: ctypes.CDLL, credentials: Credentials | None) -> ctypes.c_void_p:
    """An initiator credential: the process's default, or ``credentials``'s store."""
    minor, handle = ctypes.c_uint32(), ctypes.c_void_p()
    if credentials is None:
        major = lib.gss_acquire_cred(ctypes.byref(minor), None, 0, None, _INITIATE,
                                     ctypes.byref(handle), None, None)
    else:
        pairs = [(b"ccache", credentials.ccache.encode())]
        if credentials.client_keytab:
            pairs.append((b"client_keytab", credentials.client_keytab.encode()))
        elements = (_KeyValue * len(pairs))(*[_KeyValue(k, v) for k, v in pairs])
        store = _KeyValueSet(len(pairs), elements)
        desired = (_import_name(lib, credentials.principal, _NT_KRB5_PRINCIPAL)
                   if credentials.principal else ctypes.c_void_p())
        try:
            major = lib.gss_acquire_cred_from(ctypes.byref(minor), desired, 0, None, _INITIATE,
                                              ctypes.byref(store), ctypes.byref(handle), None,
                                              None)
        finally:
            if desired:
                lib.gss_release_name(ctypes.byref(ctypes.c_uint32()), ctypes.byref(desired))
    if major:
        raise _credential_error(major, _status_text(lib, major, minor.value),
                                "find your credential", credentials)
    return handle


def _first_token(name_text: str, name_type: bytes, mechanism: bytes,
                 credentials: Credentials | None, what: str) -> bytes:
    """The first context token towards the service ``name_text``: getting it fetches
    (or reuses) the user's ticket and a ticket for the service from the KDC."""
    lib = _gss()
    minor = ctypes.c_uint32()
    mech, _mech_bytes = _oid(mechanism)
    credential = _acquire(lib, credentials) if credentials else ctypes.c_void_p()
    name, context, token = ctypes.c_void_p(), ctypes.c_void_p(), _Buffer()
    try:
        name = _import_name(lib, name_text, name_type)
        major = lib.gss_init_sec_context(
            ctypes.byref(minor), credential, ctypes.byref(context), name, ctypes.byref(mech),
            _MUTUAL_AND_REPLAY, 0, None, None, None, ctypes.byref(token), None, None)
        if major not in (0, _CONTINUE_NEEDED):
            raise _credential_error(major, _status_text(lib, major, minor.value), what,
                                    credentials)
        return ctypes.string_at(token.value, token.length)
    finally:
        lib.gss_release_buffer(ctypes.byref(minor), ctypes.byref(token))
        if name:
            lib.gss_release_name(ctypes.byref(minor), ctypes.byref(name))
        if credential:
            lib.gss_release_cred(ctypes.byref(minor), ctypes.byref(credential))
        if context:
            lib.gss_delete_sec_context(ctypes.byref(minor), ctypes.byref(context), None)


def negotiate(host: str, credentials: Credentials | None = None) -> str:
    """The ``Authorization`` header value for ``HTTP/<host>``: ``Negotiate <token>``.

    Parameters
    ----------
    host : str
        The service's canonical host name (see :func:`service_host`).
    credentials : Credentials, optional
        Whose identity to present; by default the process's (``KRB5CCNAME``,
        ``KRB5_CLIENT_KTNAME``).

    Raises
    ------
    KerberosError
        No ticket (names ``kinit``), an expired one, or a service the KDC does not know.
    KerberosUnavailableError
        The machine has no ``libgssapi_krb5``.
    """
    token = _first_token(f"HTTP@{host}", _NT_HOSTBASED_SERVICE, _SPNEGO, credentials,
                         f"authenticate to HTTP/{host}")
    return "Negotiate " + base64.b64encode(token).decode()


def verify_login(credentials: Credentials, realm: str) -> None:
    """Ask the KDC of ``realm`` for a ticket with ``credentials``: a principal it does not
    know, or a key it refuses, fails here (a keytab alone is read lazily).

    Raises
    ------
    KerberosError
        With the KDC's reason.
    """
    _first_token(f"krbtgt/{realm}@{realm}", _NT_KRB5_PRINCIPAL, _KRB5, credentials,
                 f"log in to realm {realm}")


def credential_lifetime(credentials: Credentials | None = None) -> int:
    """Seconds the user's Kerberos credential stays valid (the ticket cache's TGT), or
    :data:`INDEFINITE` for a client keytab, which can always get a new ticket.

    Raises
    ------
    KerberosError
        No ticket, or an expired one; the message names ``kinit``.
    """
    lib = _gss()
    minor, left = ctypes.c_uint32(), ctypes.c_uint32()
    credential = _acquire(lib, credentials)
    try:
        major = lib.gss_inquire_cred(ctypes.byref(minor), credential, None, ctypes.byref(left),
                                     None, None)
        if major:
            raise _credential_error(major, _status_text(lib, major, minor.value),
                                    "read your credential", credentials)
        return int(left.value)
    finally:
        lib.gss_release_cred(ctypes.byref(minor), ctypes.byref(credential))


class _SpnegoHandler(urllib.request.BaseHandler):
    """Answers a ``401 WWW-Authenticate: Negotiate`` once, with a SPNEGO token."""

    handler_order = 400  # before urllib's default error handler

    def __init__(self, credentials: Credentials | None) -> None:
        self.credentials = credentials

    def http_error_401(self, request: urllib.request.Request, fp: Any, code: int, msg: str,
                       headers: Any) -> Any:
        offers = [offer.strip().split(" ")[0].lower()
                  for value in headers.get_all("WWW-Authenticate") or []
                  for offer in value.split(",")]
        if "negotiate" not in offers or request.get_header("Authorization"):
            return None  # not SPNEGO, or our token was refused: the 401 goes to the caller
        fp.read()
        fp.close()
        token = negotiate(service_host(request.full_url), self.credentials)
        request.add_unredirected_header("Authorization", token)
        return self.parent.open(request, timeout=request.timeout)


@lru_cache(maxsize=8)
def hadoop_opener(credentials: Credentials | None = None,
                  cafile: str | None = None) -> urllib.request.OpenerDirector:
    """The opener for Hadoop's REST APIs: no HTTP proxy (cluster hosts are reached
    directly), SPNEGO when asked, and the ``hadoop.auth`` cookies of this process.

    Parameters
    ----------
    credentials : Credentials, optional
        Whose identity SPNEGO presents; by default the process's.
    cafile : str, optional
        A certificate (PEM) HTTPS endpoints are checked against, besides the system's.

    Returns
    -------
    urllib.request.OpenerDirector
        One per argument pair, shared by the process's calls (it holds their cookies).
    """
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
        _SpnegoHandler(credentials),
    ]
    if cafile:
        handlers.append(urllib.request.HTTPSHandler(
            context=ssl.create_default_context(cafile=cafile)))
    return urllib.request.build_opener(*handlers)
