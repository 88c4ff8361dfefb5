"""The pre-flight check of a user's Kerberos login, against a real KDC (no Hadoop)."""
from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.kerberos import kinit, needs_krb5, started_realm

from zoo_ray import kerberos, spnego
from zoo_ray.errors import KerberosError
from zoo_ray.hadoop_conf import HadoopConf
from zoo_ray.login_watch import LoginWatch
from zoo_ray.minicluster import kdc as kdc_module
from zoo_ray.minicluster.kdc import Kdc

_PASSWORD = "bob-Secret-1"


@pytest.fixture(scope="module")
def realm(tmp_path_factory):
    root = tmp_path_factory.mktemp("login")
    realm, daemon = started_realm(root / "realm")
    bob = Kdc.add_user(realm, "bob", _PASSWORD)
    Kdc.export_keytab(realm, bob, root / "bob.keytab")
    Kdc.add_service(realm, "svc/localhost", root / "two.keytab")
    Kdc.export_keytab(realm, bob, root / "two.keytab")
    yield realm, root
    daemon.stop(grace=5.0)


@pytest.fixture
def gateway(realm, monkeypatch, tmp_path):
    """This process as a user's: the realm's KRB5_CONFIG and an empty ticket cache."""
    monkeypatch.setenv("KRB5_CONFIG", str(realm[0].krb5_conf))
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path / 'krb5cc'}")
    monkeypatch.delenv("KRB5_CLIENT_KTNAME", raising=False)
    return tmp_path / "krb5cc"


def test_the_cluster_s_configuration_says_whether_it_is_secure(tmp_path):
    for name, value in (("core-site.xml", "kerberos"), ("yarn-site.xml", None)):
        body = (f"<property><name>hadoop.security.authentication</name><value>{value}</value>"
                "</property>" if value else "")
        (tmp_path / name).write_text(f"<configuration>{body}</configuration>")
    assert kerberos.secure(HadoopConf(tmp_path))
    (tmp_path / "core-site.xml").write_text("<configuration></configuration>")
    assert not kerberos.secure(HadoopConf(tmp_path))


@needs_krb5
def test_a_ticket_cache_login_is_checked_and_its_lifetime_told(realm, gateway, caplog):
    with pytest.raises(KerberosError, match="no Kerberos ticket: run `kinit"):
        kerberos.check_login(None, None)
    assert kinit(realm[0], gateway, "bob", password=_PASSWORD + "\n").returncode == 0
    with caplog.at_level("INFO", logger="zoo_ray.kerberos"):
        login = kerberos.check_login(None, None)
    assert login.keytab is None and 9 * 3600 < login.ends_at - time.time() <= 10 * 3600
    assert "kinit -R" in caplog.text and "principal= and keytab=" in caplog.text
    until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(login.ends_at))
    assert f"valid until {until}" in caplog.text
    assert login.credentials is None


@needs_krb5
def test_an_expired_ticket_is_named(realm, gateway):
    assert kinit(realm[0], gateway, "-l", "2s", "bob",
                 password=_PASSWORD + "\n").returncode == 0
    time.sleep(3)
    with pytest.raises(KerberosError, match="expired: run `kinit` again"):
        kerberos.check_login(None, None)


@needs_krb5
def test_a_keytab_login_is_checked_against_the_keytab_and_the_kdc(realm, gateway):
    root = realm[1]
    login = kerberos.check_login("bob@ZOO.LOCAL", str(root / "bob.keytab"))
    assert login.ends_at is None and login.credentials.client_keytab.endswith("bob.keytab")
    assert kerberos.check_login("bob", str(root / "two.keytab")).principal == "bob"
    assert not gateway.exists()  # the user's ticket cache untouched
    with pytest.raises(KerberosError, match=r"does not hold principal=alice@ZOO.LOCAL; it "
                                            r"holds bob@ZOO.LOCAL\."):
        kerberos.check_login("alice@ZOO.LOCAL", str(root / "bob.keytab"))
    with pytest.raises(KerberosError, match="does not exist"):
        kerberos.check_login("bob", str(root / "missing.keytab"))
    (root / "not.keytab").write_text("principal=bob\n")
    with pytest.raises(KerberosError, match="is not a Kerberos keytab"):
        kerberos.check_login("bob", str(root / "not.keytab"))


@contextmanager
def _stopped_after(watch: LoginWatch) -> Iterator[None]:
    try:
        yield
    finally:
        watch.stop()


def _check_as_another_user(principal: str, keytab: Path) -> str:
    """check_login's error in a child of this process that runs as ``nobody`` (the suite
    runs as root, who reads every file): "" if it raised none."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # only os calls and check_login here; the child never returns to pytest
        message = ""
        try:
            os.close(read)
            os.environ.pop("KRB5_CONFIG", None)  # the realm's file is in root's temp dir
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            kerberos.check_login(principal, str(keytab))
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write, message.encode())
            os._exit(0)
    os.close(write)
    try:
        with os.fdopen(read) as answer:
            if not select.select([answer], [], [], 60)[0]:
                os.kill(child, signal.SIGKILL)
                raise AssertionError("the check as another user did not answer in 60 s")
            return answer.read()
    finally:
        os.waitpid(child, 0)


@needs_krb5
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_keytab_this_user_cannot_read_is_named_with_the_fix(realm):
    shared = Path(tempfile.mkdtemp(prefix="zoo-ray-keytab-", dir="/tmp"))  # open to nobody
    try:
        shared.chmod(0o755)  # the directory is open; the keytab, root's, is not
        keytab = shared / "bob.keytab"
        shutil.copy(realm[1] / "bob.keytab", keytab)
        keytab.chmod(0o600)
        message = _check_as_another_user("bob@ZOO.LOCAL", keytab)
    finally:
        shutil.rmtree(shared)
    assert message.startswith("KerberosError: ") and "is not readable by this user" in message
    assert f"chmod 600 {keytab}" in message


@needs_krb5
def test_a_principal_the_kdc_no_longer_knows_fails_before_submitting(realm, gateway):
    realm_, root = realm
    gone = Kdc.add_user(realm_, "carol", "carol-Secret-1")
    keytab = Kdc.export_keytab(realm_, gone, root / "carol.keytab")
    subprocess.run([str(kdc_module._which("kadmin.local")), "-r", realm_.name, "-q",
                    f"delprinc -force {gone}"], env=realm_.env(), check=True,
                   capture_output=True, timeout=30)
    spnego.hadoop_opener.cache_clear()
    with pytest.raises(KerberosError, match="not found in Kerberos database"):
        kerberos.check_login(gone, str(keytab))


@needs_krb5
def test_krb5_config_pointing_nowhere_is_named(gateway, monkeypatch, tmp_path):
    monkeypatch.setenv("KRB5_CONFIG", str(tmp_path / "nowhere" / "krb5.conf"))
    with pytest.raises(KerberosError, match="KRB5_CONFIG=.*names no file"):
        kerberos.check_login(None, None)


def test_keytab_principals_reads_every_entry(realm, tmp_path):
    assert kerberos.keytab_principals(realm[1] / "two.keytab") == {
        "svc/localhost@ZOO.LOCAL", "bob@ZOO.LOCAL"}
    # MIT ends the entries at a size of 0 (it writes one before appending), and skips holes.
    padded = tmp_path / "padded.keytab"
    data = (realm[1] / "bob.keytab").read_bytes()
    padded.write_bytes(data[:2] + (-8).to_bytes(4, "big", signed=True) + bytes(8) + data[2:]
                       + bytes(8))
    assert kerberos.keytab_principals(padded) == {"bob@ZOO.LOCAL"}


def test_a_multi_file_krb5_config_is_refused_for_the_jvms(monkeypatch, tmp_path):
    monkeypatch.setenv("KRB5_CONFIG", f"{tmp_path}/a.conf:{tmp_path}/b.conf")
    with pytest.raises(KerberosError, match="lists several files"):
        kerberos.check_login(None, None)


@needs_krb5
def test_the_watch_says_once_that_a_ticket_ended_unrenewed(realm, gateway, caplog):
    assert kinit(realm[0], gateway, "-l", "3s", "-r", "3s", "bob",
                 password=_PASSWORD + "\n").returncode == 0
    login = kerberos.check_login(None, None)
    watch = LoginWatch(login.ends_at, lambda: True)
    try:
        with caplog.at_level("ERROR", logger="zoo_ray.login_watch"):
            watch.start()
            deadline = time.monotonic() + 30
            while not watch.expired and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        watch.stop()
    assert watch.expired
    [record] = caplog.records
    assert "was not renewed" in record.message and "principal= and keytab=" in record.message


@needs_krb5
def test_the_watch_follows_a_renewed_ticket_and_ends_with_its_application(realm, gateway,
                                                                         caplog):
    assert kinit(realm[0], gateway, "-l", "3s", "-r", "1h", "bob",
                 password=_PASSWORD + "\n").returncode == 0
    login = kerberos.check_login(None, None)
    running = threading.Event()
    running.set()
    watch = LoginWatch(login.ends_at, running.is_set)
    with caplog.at_level("ERROR", logger="zoo_ray.login_watch"), _stopped_after(watch):
        watch.start()
        # As Hadoop's login in Spark's driver does: `kinit -R` before the ticket ends, for
        # longer than the watch's first look (at 3 + 2 s).
        for _ in range(5):
            time.sleep(1.5)
            assert kinit(realm[0], gateway, "-R").returncode == 0
        assert not watch.expired and watch._thread.is_alive()
        running.clear()  # the application ended: the watch ends at its next look
        watch._thread.join(timeout=15)
    assert not watch._thread.is_alive() and not watch.expired and caplog.records == []


def test_a_spark_job_refused_an_expired_token_is_a_kerberos_error():
    refused = RuntimeError(
        "Job aborted due to stage failure: ... org.apache.hadoop.ipc.RemoteException("
        "org.apache.hadoop.security.token.SecretManager$InvalidToken): Token  has expired, "
        "current time: 2026-12-06 17:11:48,449+0000 expected renewal time: ...")
    with pytest.raises(KerberosError, match="from_spark failed: HDFS refused") as error:
        with kerberos.tokens_checked("from_spark"):
            raise refused
    assert error.value.__cause__ is refused and "keytab=" in str(error.value)
    other = RuntimeError("Job aborted: java.lang.OutOfMemoryError")
    with pytest.raises(RuntimeError) as kept:
        with kerberos.tokens_checked("from_spark"):
            raise other
    assert kept.value is other
