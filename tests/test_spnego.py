"""zoo_ray's SPNEGO client against a real KDC and a real Kerberos acceptor (no Hadoop)."""
from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.kerberos import kinit, needs_krb5, started_realm

from zoo_ray import spnego
from zoo_ray.errors import KerberosError
from zoo_ray.minicluster.kdc import Kdc

pytestmark = needs_krb5

_PASSWORD = "alice-Secret-1"


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory):
    """A realm with alice (password and keytab) and an HTTP server that wants SPNEGO."""
    root = tmp_path_factory.mktemp("spnego")
    realm, kdc = started_realm(root / "realm")
    http_keytab = Kdc.add_service(realm, "HTTP/localhost")
    user = Kdc.add_user(realm, "alice", _PASSWORD)
    user_keytab = Kdc.export_keytab(realm, user, root / "alice.keytab")
    # A keytab whose first principal is not alice's.
    Kdc.add_service(realm, "svc/localhost", root / "two.keytab")
    Kdc.export_keytab(realm, user, root / "two.keytab")
    env = realm.env()
    env["KRB5_KTNAME"] = f"FILE:{http_keytab}"
    server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("spnego_server.py"))],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env=env)
    try:
        port = int(server.stdout.readline())
        yield realm, user, user_keytab, f"http://127.0.0.1:{port}/ws/v1/cluster/info"
    finally:
        server.kill()
        server.wait()
        kdc.stop(grace=5.0)


@pytest.fixture
def as_user(monkeypatch, tmp_path, secure_server):
    """This process uses the realm, with its own (empty) ticket cache and a fresh opener."""
    realm = secure_server[0]
    monkeypatch.setenv("KRB5_CONFIG", str(realm.krb5_conf))
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path / 'ccache'}")
    monkeypatch.delenv("KRB5_CLIENT_KTNAME", raising=False)
    spnego.hadoop_opener.cache_clear()
    yield tmp_path / "ccache"
    spnego.hadoop_opener.cache_clear()


def _get(url: str) -> str:
    with spnego.hadoop_opener().open(url, timeout=10) as response:
        return response.read().decode()


def test_the_service_is_named_by_its_canonical_host():
    assert spnego.service_host("http://127.0.0.1:8088/ws") == "localhost"
    assert spnego.service_host("http://LOCALHOST:1/") == "localhost"


def test_without_a_ticket_the_error_names_kinit_and_the_keytab_way(secure_server, as_user):
    url = secure_server[3]
    with pytest.raises(KerberosError, match=r"no Kerberos ticket: run `kinit <principal>`.*"
                                            r"principal= and keytab="):
        _get(url)
    with pytest.raises(KerberosError, match="no Kerberos ticket"):
        spnego.credential_lifetime()


def test_after_kinit_the_call_authenticates_once_then_rides_the_cookie(secure_server,
                                                                      as_user):
    realm, user, _, url = secure_server
    assert kinit(realm, as_user, user, password=_PASSWORD + "\n").returncode == 0
    assert _get(url) == f"negotiated {user}"
    assert _get(url) == f"cookie {user}"
    left = spnego.credential_lifetime()
    assert 9 * 3600 < left <= 10 * 3600  # the realm's 10 h tickets


def test_a_client_keytab_authenticates_without_a_ticket_cache(secure_server, as_user,
                                                             monkeypatch):
    _, user, keytab, url = secure_server
    monkeypatch.setenv("KRB5_CLIENT_KTNAME", f"FILE:{keytab}")
    monkeypatch.setenv("KRB5CCNAME", "MEMORY:zoo-ray-test")
    assert _get(url) == f"negotiated {user}"
    assert not as_user.exists()  # nothing written to a ticket cache on disk


def test_an_expired_ticket_is_named_as_such(secure_server, as_user):
    realm, user, _, url = secure_server
    assert kinit(realm, as_user, "-l", "2s", user, password=_PASSWORD + "\n").returncode == 0
    time.sleep(3)
    with pytest.raises(KerberosError, match="ticket has expired: run `kinit` again"):
        spnego.credential_lifetime()
    with pytest.raises(KerberosError, match="expired"):
        _get(url)


def test_an_open_server_is_asked_without_kerberos(monkeypatch):
    seen: list[str | None] = []

    class Open(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Open)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # Even with a proxy set for the gateway's Internet traffic: cluster hosts go direct.
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    spnego.hadoop_opener.cache_clear()
    try:
        assert _get(f"http://127.0.0.1:{server.server_port}/ws") == "ok"
    finally:
        server.shutdown()
        thread.join(10)
        spnego.hadoop_opener.cache_clear()
    assert seen == [None]


def test_explicit_credentials_work_whatever_the_process_has(secure_server, as_user,
                                                             tmp_path):
    # The local Hadoop's own tools present its user this way, without touching KRB5CCNAME.
    _, user, keytab, url = secure_server
    ccache = tmp_path / "own-ccache"
    credentials = spnego.Credentials(f"FILE:{ccache}", str(keytab))
    with spnego.hadoop_opener(credentials).open(url, timeout=10) as response:
        assert response.read().decode() == f"negotiated {user}"
    assert ccache.exists() and not as_user.exists()
    assert spnego.credential_lifetime(credentials) > 3600


def test_the_principal_asked_for_is_the_one_presented_from_a_keytab_of_several(
        secure_server, as_user, tmp_path):
    _, user, keytab, url = secure_server
    two = keytab.parent / "two.keytab"
    for principal, expected in ((user, user), (None, "svc/localhost@ZOO.LOCAL")):
        credentials = spnego.Credentials(f"FILE:{tmp_path / str(principal)}", str(two),
                                         principal)
        with spnego.hadoop_opener(credentials).open(url, timeout=10) as response:
            assert response.read().decode() == f"negotiated {expected}"


def test_a_refused_keytab_login_names_the_keytab_not_kinit(secure_server, as_user, tmp_path):
    _, _, keytab, url = secure_server
    credentials = spnego.Credentials(f"FILE:{tmp_path / 'cc'}", str(keytab), "nobody@ZOO.LOCAL")
    with pytest.raises(KerberosError, match=r"as nobody@ZOO.LOCAL from keytab .*klist -kt"):
        spnego.hadoop_opener(credentials).open(url, timeout=10)
