"""SPNEGO (HTTP Negotiate) for urllib, three ways, for zoo_ray's REST clients.

* ``negotiate_gssapi``: python-gssapi (C extension, builds against libkrb5-dev).
* ``negotiate_ctypes``: the same calls straight into the system's libgssapi_krb5.so.2 via ctypes.
  No build, no pip package: a Kerberized gateway always has that library (kinit links it).
* ``negotiate_pyspnego``: pyspnego (its Kerberos path needs gssapi underneath on Linux).

Each returns the value for an ``Authorization`` header: ``Negotiate <base64 token>`` for
``HTTP/<host>@REALM`` using the default credential (KRB5CCNAME ticket cache, or the client
keytab named by KRB5_CLIENT_KTNAME).

``SpnegoHandler`` is a urllib handler: on ``401`` with ``WWW-Authenticate: Negotiate`` it retries
once with the token, and keeps the ``hadoop.auth`` cookie Hadoop answers with (so later requests
skip the KDC). An open cluster never answers 401, so nothing changes there.
"""
from __future__ import annotations

import base64
import ctypes
import ctypes.util
import socket
import urllib.error
import urllib.parse
import urllib.request


# ----------------------------------------------------------------- the service principal
def service_host(url: str) -> str:
    """Host for ``HTTP/<host>``: Hadoop's servers use their canonical host name (``_HOST``)."""
    host = urllib.parse.urlsplit(url).hostname or "localhost"
    try:
        # What the browser/curl/Hadoop's own client do: canonicalise via reverse lookup.
        return socket.gethostbyaddr(socket.gethostbyname(host))[0].lower()
    except OSError:
        return host.lower()


# ----------------------------------------------------------------- python-gssapi
def negotiate_gssapi(host: str) -> str:
    import gssapi

    name = gssapi.Name(f"HTTP@{host}", gssapi.NameType.hostbased_service)
    ctx = gssapi.SecurityContext(name=name, usage="initiate",
                                 mech=gssapi.Mechanism.from_sasl_name("SPNEGO"))
    token = ctx.step()
    return "Negotiate " + base64.b64encode(token).decode()


# ----------------------------------------------------------------- pyspnego
def negotiate_pyspnego(host: str) -> str:
    import spnego

    ctx = spnego.client(hostname=host, service="HTTP", protocol="negotiate")
    return "Negotiate " + base64.b64encode(ctx.step()).decode()


# ----------------------------------------------------------------- ctypes, no build
class _Buffer(ctypes.Structure):
    _fields_ = [("length", ctypes.c_size_t), ("value", ctypes.c_void_p)]


class _OID(ctypes.Structure):
    _fields_ = [("length", ctypes.c_uint32), ("elements", ctypes.c_void_p)]


_GSS = None


def _gss():
    global _GSS
    if _GSS is None:
        path = ctypes.util.find_library("gssapi_krb5") or "libgssapi_krb5.so.2"
        lib = ctypes.CDLL(path)
        P = ctypes.POINTER
        lib.gss_import_name.argtypes = [P(ctypes.c_uint32), P(_Buffer), P(_OID),
                                        P(ctypes.c_void_p)]
        lib.gss_init_sec_context.argtypes = [
            P(ctypes.c_uint32), ctypes.c_void_p, P(ctypes.c_void_p), ctypes.c_void_p, P(_OID),
            ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p, P(_Buffer), P(ctypes.c_void_p),
            P(_Buffer), P(ctypes.c_uint32), P(ctypes.c_uint32)]
        lib.gss_release_buffer.argtypes = [P(ctypes.c_uint32), P(_Buffer)]
        lib.gss_release_name.argtypes = [P(ctypes.c_uint32), P(ctypes.c_void_p)]
        lib.gss_delete_sec_context.argtypes = [P(ctypes.c_uint32), P(ctypes.c_void_p),
                                               ctypes.c_void_p]
        lib.gss_display_status.argtypes = [P(ctypes.c_uint32), ctypes.c_uint32, ctypes.c_int,
                                           P(_OID), P(ctypes.c_uint32), P(_Buffer)]
        _GSS = lib
    return _GSS


def _oid(der: bytes) -> tuple[_OID, ctypes.Array]:
    buf = ctypes.create_string_buffer(der, len(der))
    return _OID(len(der), ctypes.cast(buf, ctypes.c_void_p)), buf


# 1.2.840.113554.1.2.1.4 GSS_C_NT_HOSTBASED_SERVICE ; 1.3.6.1.5.5.2 SPNEGO
_NT_HOSTBASED = bytes.fromhex("2a864886f71201020104")
_SPNEGO = bytes.fromhex("2b0601050502")


def _status_text(lib, major: int, minor: int) -> str:
    out = []
    for code, kind in ((major, 1), (minor, 2)):
        ctx = ctypes.c_uint32(0)
        while True:
            m, buf = ctypes.c_uint32(), _Buffer()
            lib.gss_display_status(ctypes.byref(m), code, kind, None, ctypes.byref(ctx),
                                   ctypes.byref(buf))
            if buf.length:
                out.append(ctypes.string_at(buf.value, buf.length).decode(errors="replace"))
            lib.gss_release_buffer(ctypes.byref(m), ctypes.byref(buf))
            if not ctx.value:
                break
    return ": ".join(out)


class GssError(Exception):
    pass


def negotiate_ctypes(host: str) -> str:
    lib = _gss()
    minor = ctypes.c_uint32()
    text = f"HTTP@{host}".encode()
    tbuf = ctypes.create_string_buffer(text, len(text))
    name_buf = _Buffer(len(text), ctypes.cast(tbuf, ctypes.c_void_p))
    nt, _keep1 = _oid(_NT_HOSTBASED)
    mech, _keep2 = _oid(_SPNEGO)
    name = ctypes.c_void_p()
    major = lib.gss_import_name(ctypes.byref(minor), ctypes.byref(name_buf), ctypes.byref(nt),
                                ctypes.byref(name))
    if major:
        raise GssError(_status_text(lib, major, minor.value))
    ctx = ctypes.c_void_p()
    out = _Buffer()
    flags = 2 | 4  # GSS_C_MUTUAL_FLAG | GSS_C_REPLAY_FLAG (curl asks the same)
    try:
        major = lib.gss_init_sec_context(
            ctypes.byref(minor), None, ctypes.byref(ctx), name, ctypes.byref(mech), flags, 0,
            None, None, None, ctypes.byref(out), None, None)
        # GSS_S_COMPLETE (0) or GSS_S_CONTINUE_NEEDED (1): the first token is what HTTP sends.
        if major not in (0, 1):
            raise GssError(_status_text(lib, major, minor.value))
        token = ctypes.string_at(out.value, out.length)
    finally:
        lib.gss_release_buffer(ctypes.byref(minor), ctypes.byref(out))
        lib.gss_release_name(ctypes.byref(minor), ctypes.byref(name))
        if ctx:
            lib.gss_delete_sec_context(ctypes.byref(minor), ctypes.byref(ctx), None)
    return "Negotiate " + base64.b64encode(token).decode()


# ----------------------------------------------------------------- urllib handler
class SpnegoHandler(urllib.request.BaseHandler):
    """Answer a ``401 WWW-Authenticate: Negotiate`` once with a SPNEGO token.

    ``negotiate`` is one of the functions above. Hadoop's AuthenticationFilter then sets a
    signed ``hadoop.auth`` cookie; an HTTPCookieProcessor in the same opener keeps it.
    """

    handler_order = 400  # before the default error handler

    def __init__(self, negotiate=negotiate_ctypes):
        self.negotiate = negotiate

    def http_error_401(self, req, fp, code, msg, headers):
        offers = [h.strip() for v in headers.get_all("WWW-Authenticate") or []
                  for h in v.split(",")]
        if not any(o.split(" ")[0].lower() == "negotiate" for o in offers):
            return None
        if req.get_header("Authorization"):
            return None  # we already tried: let the 401 through
        fp.read()
        fp.close()
        host = service_host(req.full_url)
        req.add_unredirected_header("Authorization", self.negotiate(host))
        return self.parent.open(req, timeout=req.timeout)


def opener(negotiate=negotiate_ctypes, ssl_context=None) -> urllib.request.OpenerDirector:
    """urllib opener with SPNEGO, cookies, and (optionally) a CA for HTTPS_ONLY daemons."""
    import http.cookiejar

    handlers = [urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
                SpnegoHandler(negotiate)]
    if ssl_context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ssl_context))
    return urllib.request.build_opener(*handlers)


# ----------------------------------------------------------------- pre-flight: the TGT's lifetime
GSS_S_NO_CRED = 7 << 16
GSS_S_CREDENTIALS_EXPIRED = 11 << 16


def ticket_seconds_left() -> int:
    """Seconds the default initiator credential (the ticket cache's TGT, or a client keytab)
    stays valid, via gss_acquire_cred + gss_inquire_cred. 0xFFFFFFFF means "indefinite" (a client
    keytab can always get a new TGT). Raises GssError naming what is wrong (no ticket / expired)."""
    lib = _gss()
    P = ctypes.POINTER
    lib.gss_acquire_cred.argtypes = [P(ctypes.c_uint32), ctypes.c_void_p, ctypes.c_uint32,
                                     ctypes.c_void_p, ctypes.c_int, P(ctypes.c_void_p),
                                     ctypes.c_void_p, P(ctypes.c_uint32)]
    lib.gss_inquire_cred.argtypes = [P(ctypes.c_uint32), ctypes.c_void_p, P(ctypes.c_void_p),
                                     P(ctypes.c_uint32), P(ctypes.c_int), ctypes.c_void_p]
    lib.gss_release_cred.argtypes = [P(ctypes.c_uint32), P(ctypes.c_void_p)]
    minor, cred, left = ctypes.c_uint32(), ctypes.c_void_p(), ctypes.c_uint32()
    major = lib.gss_acquire_cred(ctypes.byref(minor), None, 0, None, 1,  # GSS_C_INITIATE
                                 ctypes.byref(cred), None, None)
    if major:
        raise GssError(_status_text(lib, major, minor.value))
    try:
        major = lib.gss_inquire_cred(ctypes.byref(minor), cred, None, ctypes.byref(left), None,
                                     None)
        if major:
            raise GssError(_status_text(lib, major, minor.value))
        return left.value
    finally:
        lib.gss_release_cred(ctypes.byref(minor), ctypes.byref(cred))
