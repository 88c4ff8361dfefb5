"""Proofs against a running secure_hadoop.py cluster (run while holding /work/e2e.lock).

1. Java HDFS client (FsShell through java -cp): no ticket -> fails; kinit (password on stdin) -> ls OK;
   kinit -kt keytab -> put/cat OK.
2. Python SPNEGO to the RM REST API: 401 without a ticket, 200 with one.
3. SPNEGO to the NameNode over HTTPS: JMX and WebHDFS (LISTSTATUS, GETDELEGATIONTOKEN).
4. SPNEGO to the NodeManager REST API.
"""
import json, os, ssl, subprocess, sys, time, urllib.error, urllib.request
HERE = os.path.dirname(os.path.abspath(__file__)); sys.path.insert(0, HERE)
import negotiate
from secure_hadoop import Cluster, USER, REALM, ADDR, java_argv

root = sys.argv[1]
c = Cluster(root); st = c.state(); p = st["ports"]
cc = c.root / f"ccache-{USER}"
if cc.exists(): cc.unlink()
os.environ.update(KRB5_CONFIG=str(c.kdc.krb5_conf), KRB5CCNAME=f"FILE:{cc}")
pw = (c.root / "secrets" / f"{USER}.password").read_text()

def show(label, r):
    out = (r.stdout + r.stderr).strip().splitlines()
    print(f"--- {label}: exit {r.returncode}"); print("\n".join(l[:220] for l in out[-6:]))

t = time.monotonic(); r = c.fs(cc, "-ls", "/", check=False); show(f"hdfs dfs -ls / WITHOUT ticket ({time.monotonic()-t:.1f}s)", r)
c.kdc.kinit_password(USER, pw, cc)
t = time.monotonic(); r = c.fs(cc, "-ls", "/", check=False); show(f"hdfs dfs -ls / after kinit (password) ({time.monotonic()-t:.1f}s)", r)
(c.root / "hello.txt").write_text("hello secure hdfs\n")
r = c.fs(cc, "-put", "-f", str(c.root / "hello.txt"), f"/user/{USER}/hello.txt", check=False); show("put (SASL data transfer to the DataNode)", r)
r = c.fs(cc, "-cat", f"/user/{USER}/hello.txt", check=False); show("cat", r)
r = c.fs(cc, "-ls", "/tmp", f"/user", check=False); show("ls /tmp /user", r)
# keytab login, separate ccache
cc2 = c.root / "ccache-user-kt"
c.kdc.kinit_keytab(f"{USER}@{REALM}", c.kdc.root / "keytabs" / f"{USER}.keytab", cc2)
r = c.fs(cc2, "-ls", f"/user/{USER}", check=False); show("ls after kinit -kt", r)

# Java without -Djava.security.krb5.conf: does it read KRB5_CONFIG?
argv = [a for a in java_argv(c.root / "conf", "org.apache.hadoop.fs.FsShell", 256, c.kdc.krb5_conf, args=["-ls", "/"]) if not a.startswith("-Djava.security.krb5.conf")]
r = subprocess.run(argv, env=c.env(cc), capture_output=True, text=True, timeout=120)
show("Java client with only KRB5_CONFIG env (no -Djava.security.krb5.conf)", r)

# REST
ctx = ssl.create_default_context(cafile=str(c.root / "tls" / "ca.pem"))
def get(url, auth=True, opener=None):
    o = opener or (negotiate.opener(ssl_context=ctx) if auth else urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx)))
    t = time.monotonic()
    try:
        with o.open(url, timeout=10) as resp:
            body = resp.read().decode()[:200]
            return resp.status, body, time.monotonic() - t
    except urllib.error.HTTPError as e:
        return e.code, f"{e.headers.get('WWW-Authenticate')} {e.read().decode()[:120]!r}", time.monotonic() - t

rm = f"http://{ADDR}:{p['rm_web']}/ws/v1/cluster/info"
nn = f"https://{ADDR}:{p['nn_https']}"
nm = f"http://{ADDR}:{p['nm0_web']}/ws/v1/node/info"
rm_ip = f"http://127.0.0.1:{p['rm_web']}/ws/v1/cluster/info"
print("\n=== REST with a ticket in the cache (the user) ===")
for label, url in [("RM cluster/info", rm), ("RM via 127.0.0.1 URL", rm_ip), ("NM node/info", nm),
                   ("NN JMX", f"{nn}/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo"),
                   ("WebHDFS LISTSTATUS", f"{nn}/webhdfs/v1/user/{USER}?op=LISTSTATUS"),
                   ("WebHDFS GETDELEGATIONTOKEN", f"{nn}/webhdfs/v1/?op=GETDELEGATIONTOKEN")]:
    print(f"{label}: no auth ->", get(url, auth=False)[:2])
    code, body, dt = get(url)
    print(f"{label}: SPNEGO -> {code} in {dt*1000:.0f} ms: {body[:160]}")
# RM apps with the ACL-aware REST identity
code, body, _ = get(f"http://{ADDR}:{p['rm_web']}/ws/v1/cluster/apps"); print("RM apps:", code, body[:100])
# Without any ticket
os.environ["KRB5CCNAME"] = f"FILE:{c.root}/ccache-none"
try:
    get(rm)
except Exception as e:
    print("RM with no ticket at all ->", type(e).__name__, str(e)[:150])
# Keytab only (MIT client keytab, no kinit): KRB5_CLIENT_KTNAME + an empty MEMORY ccache
os.environ.update(KRB5CCNAME="MEMORY:zr", KRB5_CLIENT_KTNAME=f"FILE:{c.kdc.root}/keytabs/{USER}.keytab")
print("RM with client keytab only ->", get(rm)[:2])
print("plain HTTP to the NN (HTTPS_ONLY) ->", end=" ")
try:
    urllib.request.urlopen(f"http://{ADDR}:{p['nn_https']}/jmx", timeout=5); print("answered?!")
except Exception as e:
    print(type(e).__name__, str(e)[:100])
