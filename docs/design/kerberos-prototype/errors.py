"""Issue #31 point 4 (bad input): what each mistake looks like to kinit/klist, to the ctypes
pre-flight (negotiate.ticket_seconds_left) and to Hadoop's UGI in a JVM. KDC only, no daemons."""
import os, shutil, subprocess, sys, time
HERE = os.path.dirname(os.path.abspath(__file__)); sys.path.insert(0, HERE)
from kdc import MitKdc
import negotiate
JARS = os.path.expanduser("~/.cache/zoo_ray/hadoop-3.5.0/lib/*")
root = "/work/krb-proto/run/kdc-errors"; shutil.rmtree(root, ignore_errors=True)
kdc = MitKdc(root); kdc.create(); kdc.start()
try:
    kdc.add_user("root", "root-Secret-1")
    kt = kdc.export_user_keytab("root", kdc.root / "keytabs" / "root.keytab")
    other = kdc.add_service("svc/localhost")
    cc = kdc.root / "ccache" / "cc"
    def env(**kw):
        e = dict(os.environ, KRB5_CONFIG=str(kdc.krb5_conf), KRB5CCNAME=f"FILE:{cc}"); e.update(kw); return e
    def java(*args, krb5=None, **kw):
        r = subprocess.run(["java", f"-Djava.security.krb5.conf={krb5 or kdc.krb5_conf}",
                            "--add-opens=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
                            "-Dhadoop.home.dir=/tmp", "-cp", f"{HERE}/java:{JARS}", f"{HERE}/java/Login.java", *args],
                           env=env(**kw), capture_output=True, text=True, timeout=120)
        return "\n    ".join(l[:230] for l in r.stdout.strip().splitlines()[:4])
    def pre(**kw):
        old = dict(os.environ); os.environ.update(env(**kw))
        try:
            return f"{negotiate.ticket_seconds_left()} s left"
        except negotiate.GssError as e:
            return f"GssError: {e}"
        finally:
            os.environ.clear(); os.environ.update(old)
    def klist_s(**kw):
        return subprocess.run(["klist", "-s"], env=env(**kw)).returncode
    print("1. no ticket cache:\n   klist -s ->", klist_s(), "\n   pre-flight ->", pre(), "\n   UGI ->", java("ccache"))
    kdc.kinit_password("root", "root-Secret-1", cc)
    print("2. valid ticket:\n   klist -s ->", klist_s(), "\n   pre-flight ->", pre(), "\n   UGI ->", java("ccache"))
    # An expired TGT: kinit -l 3s (the KDC grants that short a life), then wait.
    subprocess.run(["kinit", "-l", "3s", "root"], input="root-Secret-1\n", text=True, env=env(), capture_output=True)
    time.sleep(5)
    print("3. expired ticket:\n   klist ->", subprocess.run(["klist"], env=env(), capture_output=True, text=True).stdout.replace("\n", " | ")[:200],
          "\n   klist -s ->", klist_s(), "\n   pre-flight ->", pre(), "\n   UGI ->", java("ccache"))
    print("4. keytab without the principal:\n   kinit ->", subprocess.run(["kinit", "-kt", str(other), "root"], env=env(), capture_output=True, text=True).stderr.strip(),
          "\n   UGI ->", java("keytab", "root@ZOO.LOCAL", str(other)))
    print("5. unreadable keytab (missing file; root reads any mode):\n   kinit ->", subprocess.run(["kinit", "-kt", "/nonexistent.keytab", "root"], env=env(), capture_output=True, text=True).stderr.strip(),
          "\n   UGI ->", java("keytab", "root@ZOO.LOCAL", "/nonexistent.keytab"))
    print("6. principal unknown to the KDC:\n   kinit ->", subprocess.run(["kinit", "nobody"], input="x\n", env=env(), capture_output=True, text=True).stderr.strip(),
          "\n   UGI ->", java("keytab", "nobody@ZOO.LOCAL", str(kt)))
    print("7. KRB5_CONFIG pointing nowhere:\n   kinit ->", subprocess.run(["kinit", "root"], input="x\n", env=env(KRB5_CONFIG="/nonexistent/krb5.conf"), capture_output=True, text=True).stderr.strip(),
          "\n   pre-flight ->", pre(KRB5_CONFIG="/nonexistent/krb5.conf"),
          "\n   UGI (java.security.krb5.conf=/nonexistent) ->", java("ccache", krb5="/nonexistent/krb5.conf"))
    os.chmod(kt, 0o600)
    print("8. client keytab only (KRB5_CLIENT_KTNAME, MEMORY ccache):\n   pre-flight ->", pre(KRB5CCNAME="MEMORY:x", KRB5_CLIENT_KTNAME=f"FILE:{kt}"))
finally:
    kdc.stop()
