"""A SPNEGO-protected HTTP server for tests, as Hadoop's AuthenticationFilter behaves.

Run as ``python tests/spnego_server.py`` with ``KRB5_CONFIG`` and ``KRB5_KTNAME`` (the
``HTTP/<host>`` keytab) set; it prints its port, then serves until killed:

- a ``hadoop.auth`` cookie it issued: 200, ``cookie <principal>``;
- ``Authorization: Negotiate <token>``: the token is accepted with the system's
  libgssapi_krb5 (a real Kerberos acceptor), then 200, ``negotiated <principal>``, and the
  cookie; a token it cannot accept: 403 with GSS-API's reason;
- anything else: 401 with ``WWW-Authenticate: Negotiate``.
"""
from __future__ import annotations

import base64
import ctypes
import ctypes.util
import http.server
import sys


class _Buffer(ctypes.Structure):
    _fields_ = [("length", ctypes.c_size_t), ("value", ctypes.c_void_p)]


_LIB = ctypes.CDLL(ctypes.util.find_library("gssapi_krb5") or "libgssapi_krb5.so.2")
_u32p, _voidp, _buf = (ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_void_p),
                       ctypes.POINTER(_Buffer))
_LIB.gss_accept_sec_context.argtypes = [
    _u32p, _voidp, ctypes.c_void_p, _buf, ctypes.c_void_p, _voidp, ctypes.c_void_p, _buf,
    _u32p, _u32p, ctypes.c_void_p]
_LIB.gss_display_name.argtypes = [_u32p, ctypes.c_void_p, _buf, ctypes.c_void_p]
_LIB.gss_display_status.argtypes = [_u32p, ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p,
                                    _u32p, _buf]
_LIB.gss_release_buffer.argtypes = [_u32p, _buf]
_LIB.gss_release_name.argtypes = [_u32p, _voidp]
_LIB.gss_delete_sec_context.argtypes = [_u32p, _voidp, ctypes.c_void_p]


def _text(buffer: _Buffer) -> str:
    return ctypes.string_at(buffer.value, buffer.length).decode(errors="replace")


def _status(major: int, minor: int) -> str:
    texts = []
    for code, kind in ((major, 1), (minor, 2)):
        status, more, text = ctypes.c_uint32(), ctypes.c_uint32(0), _Buffer()
        _LIB.gss_display_status(ctypes.byref(status), code, kind, None, ctypes.byref(more),
                                ctypes.byref(text))
        texts.append(_text(text))
        _LIB.gss_release_buffer(ctypes.byref(status), ctypes.byref(text))
    return ": ".join(texts)


def accept(token: bytes) -> str:
    """The initiator's principal, or ValueError with GSS-API's reason."""
    holder = ctypes.create_string_buffer(token, len(token))
    incoming = _Buffer(len(token), ctypes.cast(holder, ctypes.c_void_p))
    minor, context, source, reply = ctypes.c_uint32(), ctypes.c_void_p(), ctypes.c_void_p(), \
        _Buffer()
    major = _LIB.gss_accept_sec_context(
        ctypes.byref(minor), ctypes.byref(context), None, ctypes.byref(incoming), None,
        ctypes.byref(source), None, ctypes.byref(reply), None, None, None)
    try:
        if major != 0:
            raise ValueError(_status(major, minor.value))
        name = _Buffer()
        _LIB.gss_display_name(ctypes.byref(minor), source, ctypes.byref(name), None)
        principal = _text(name)
        _LIB.gss_release_buffer(ctypes.byref(minor), ctypes.byref(name))
        return principal
    finally:
        _LIB.gss_release_buffer(ctypes.byref(minor), ctypes.byref(reply))
        if source:
            _LIB.gss_release_name(ctypes.byref(minor), ctypes.byref(source))
        if context:
            _LIB.gss_delete_sec_context(ctypes.byref(minor), ctypes.byref(context), None)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        cookie = self.headers.get("Cookie", "")
        auth = self.headers.get("Authorization", "")
        if "hadoop.auth=ok-" in cookie:
            self._answer(200, f"cookie {cookie.split('hadoop.auth=ok-')[1].split(';')[0]}")
        elif auth.startswith("Negotiate "):
            try:
                principal = accept(base64.b64decode(auth.split(" ", 1)[1]))
            except ValueError as exc:
                self._answer(403, str(exc))
                return
            self._answer(200, f"negotiated {principal}",
                         {"Set-Cookie": f"hadoop.auth=ok-{principal}; Path=/"})
        else:
            self._answer(401, "Authentication required", {"WWW-Authenticate": "Negotiate"})

    def _answer(self, code: int, body: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(format % args + "\n")


def main() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
