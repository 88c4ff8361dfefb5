"""The local Hadoop's private Kerberos realm, on a real MIT KDC (no Hadoop needed)."""
from __future__ import annotations

import os
import socket
import stat
import subprocess

import pytest
from tests.kerberos import kinit, needs_krb5, started_realm

from zoo_ray.errors import DaemonStartError, KerberosError, KerberosUnavailableError
from zoo_ray.minicluster import kdc as kdc_module
from zoo_ray.minicluster.kdc import Kdc, Realm, check_tools
from zoo_ray.minicluster.teardown import stray_processes


@pytest.fixture
def realm(tmp_path):
    realm, daemon = started_realm(tmp_path / "realm")
    yield realm
    daemon.stop(grace=5.0)
    assert not daemon.alive


def _klist(realm: Realm, ccache) -> str:
    env = realm.env()
    env["KRB5CCNAME"] = f"FILE:{ccache}"
    return subprocess.run([kdc_module._which("klist"), "-f"], capture_output=True, text=True,
                          env=env, timeout=30, check=True).stdout


@needs_krb5
def test_a_user_logs_in_with_password_and_with_keytab_and_services_get_keytabs(realm, tmp_path):
    assert stat.S_IMODE(os.stat(realm.dir).st_mode) == 0o700
    service_keytab = Kdc.add_service(realm, "nn/localhost")
    assert stat.S_IMODE(service_keytab.stat().st_mode) == 0o600
    user = Kdc.add_user(realm, "alice", "s3cret-pw")
    assert user == "alice@ZOO.LOCAL"
    user_keytab = Kdc.export_keytab(realm, user, tmp_path / "alice.keytab")
    assert stat.S_IMODE(user_keytab.stat().st_mode) == 0o600

    wrong = kinit(realm, tmp_path / "cc0", user, password="wrong\n")
    assert wrong.returncode != 0
    by_password = kinit(realm, tmp_path / "cc1", user, password="s3cret-pw\n")
    assert by_password.returncode == 0, by_password.stderr
    assert "Default principal: alice@ZOO.LOCAL" in _klist(realm, tmp_path / "cc1")
    # The keytab was exported without changing the key: the password still works after it.
    by_keytab = kinit(realm, tmp_path / "cc2", "-kt", str(user_keytab), user)
    assert by_keytab.returncode == 0, by_keytab.stderr
    service = kinit(realm, tmp_path / "cc3", "-kt", str(service_keytab),
                     "nn/localhost@ZOO.LOCAL")
    assert service.returncode == 0, service.stderr
    assert "Flags: FRIA" in _klist(realm, tmp_path / "cc2")  # forwardable, renewable


@needs_krb5
def test_a_failed_query_is_a_typed_error_naming_the_principal(realm, tmp_path):
    Kdc.add_service(realm, "rm/localhost")
    with pytest.raises(KerberosError, match="already exists"):
        Kdc.add_service(realm, "rm/localhost")
    with pytest.raises(KerberosError, match="nobody@ZOO.LOCAL does not exist"):
        Kdc.export_keytab(realm, "nobody", tmp_path / "nobody.keytab")


@needs_krb5
def test_a_kdc_that_cannot_listen_says_why_and_leaves_nothing(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        kdc = Kdc(tmp_path / "realm")
        realm = kdc.create(port=taken.getsockname()[1])
        with pytest.raises(DaemonStartError, match="Address already in use"):
            kdc.start(realm, timeout=5.0)
    assert stray_processes(tmp_path / "realm") == []


def test_missing_tools_name_the_packages(monkeypatch):
    monkeypatch.setattr(kdc_module, "_which", lambda tool: None)
    with pytest.raises(KerberosUnavailableError, match="apt-get install -y krb5-kdc"):
        check_tools()


def test_the_realm_record_round_trips():
    realm = Realm("ZOO.LOCAL", 8888, "/tmp/realm")
    assert Realm.from_dict(realm.to_dict()) == realm
    assert realm.principal("nn/localhost") == "nn/localhost@ZOO.LOCAL"
    assert realm.principal("bob@OTHER") == "bob@OTHER"
    assert realm.env({})["KRB5_CONFIG"] == "/tmp/realm/krb5.conf"
