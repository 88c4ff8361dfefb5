"""The secure local Hadoop: its realm, principals, keytabs, TLS material and configuration.

``MiniClusterSpec(kerberos=True)`` runs HDFS and YARN as production clusters do: Kerberos
on every RPC (``hadoop.security.authentication=kerberos``, service-level authorization,
block access tokens), SPNEGO on every web UI and REST API, queue ACLs that let users kill
only their own applications, and log aggregation on. The DataNode is secured the way that
works without root: SASL on its data-transfer protocol, which Hadoop accepts only with
HTTPS for HDFS's web endpoints, so the cluster has a self-signed certificate of its own
(privileged ports would need root and jsvc, and collide between clusters).

Every daemon's principal names ``localhost``: Hadoop substitutes ``_HOST`` with the host
string of each address, and clients ask for the canonical name, so the addresses are
written with the name, never ``127.0.0.1``. The user principal is named after the OS user
that runs the daemons, because containers run as that user (DefaultContainerExecutor) and
secure log aggregation accepts only files owned by the application's user.
Runs on the machine that starts the local Hadoop.
"""
from __future__ import annotations

import getpass
import os
import secrets
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import KerberosError
from ..kerberos import krb5_java_options
from .kdc import Kdc, Realm

__all__ = ["HOSTNAME", "Security", "prepare", "secure_overrides"]

#: The host name in every address and principal of the secure local Hadoop.
HOSTNAME = "localhost"

#: Service principals and the keytab each goes into.
_SERVICES = {"nn": "hdfs", "dn": "hdfs", "rm": "yarn", "nm": "yarn", "HTTP": "http"}


@dataclass(frozen=True)
class Security:
    """What a secure local Hadoop's clients need. Round-trips through :meth:`to_dict`.

    Parameters
    ----------
    realm : Realm
        The KDC's realm.
    user : str
        The user principal (``<os user>@ZOO.LOCAL``).
    user_keytab : str
        The user's keytab (0600); its password is in ``password_file`` (0600).
    password_file : str
        The user's password, for ``kinit`` typed by a person.
    keytabs : dict
        ``{"hdfs": ..., "yarn": ..., "http": ...}``: the daemons' keytabs.
    ca_file : str
        The cluster certificate (PEM) HTTPS clients of HDFS's web endpoints trust.
    http_secret : str
        The file signing the daemons' ``hadoop.auth`` cookies.
    """

    realm: Realm
    user: str
    user_keytab: str
    password_file: str
    keytabs: dict[str, str]
    ca_file: str
    http_secret: str

    @property
    def java_options(self) -> list[str]:
        """JVM options every process of the cluster (daemons, clients) starts with: Java
        reads no ``KRB5_CONFIG``, and would fall back to ``/etc/krb5.conf``."""
        return krb5_java_options(self.realm.krb5_conf)

    @property
    def superuser(self) -> str:
        """The principal HDFS takes as its superuser (``nn/`` maps to ``hdfs``, the
        NameNode's user), to lay out the file system as a cluster's admins do."""
        return self.realm.principal(f"nn/{HOSTNAME}")

    def client_env(self, base: dict[str, str], ccache: Path,
                   principal: str | None = None) -> dict[str, str]:
        """``base`` for a Hadoop client JVM acting as ``principal`` (default: the user):
        a fresh ticket from its keytab in ``ccache``, which Java finds through
        ``KRB5CCNAME``."""
        principal = principal or self.user
        keytab = self.user_keytab if principal == self.user else self.keytabs[
            _SERVICES[principal.split("/")[0]]]
        Kdc.kinit(self.realm, principal, Path(keytab), ccache)
        env = self.realm.env(base)
        env["KRB5CCNAME"] = f"FILE:{ccache}"
        return env

    def kinit_command(self) -> str:
        """The command that gives a shell the user's ticket (password from the file)."""
        return (f"KRB5_CONFIG={self.realm.krb5_conf} kinit {self.user} "
                f"< {self.password_file}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of this record (paths, never a secret)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Security:
        """The record described by ``data``."""
        return cls(**{**data, "realm": Realm.from_dict(data["realm"])})


def prepare(cluster_dir: Path, java_home: Path, realm: Realm,
            ) -> tuple[Security, dict[str, dict[str, str]]]:
    """Principals and keytabs in ``realm`` (its KDC running), the user (password and
    keytab), the TLS keystore and the cookie secret, all under ``cluster_dir/security``.

    Returns the record and the ``ssl-server.xml``/``ssl-client.xml`` properties, which
    hold the keystores' passwords and so are only ever written to files of mode 0600.
    """
    root = cluster_dir / "security"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    keytabs: dict[str, str] = {}
    for service, keytab in _SERVICES.items():
        path = Kdc.add_service(realm, f"{service}/{HOSTNAME}", root / f"{keytab}.keytab")
        keytabs[keytab] = str(path)
    user = getpass.getuser()
    password = secrets.token_urlsafe(18)
    password_file = root / "user.password"
    _write_private(password_file, password + "\n")
    principal = Kdc.add_user(realm, user, password)
    user_keytab = Kdc.export_keytab(realm, principal, root / f"{user}.keytab")
    http_secret = root / "http-secret"
    _write_private(http_secret, secrets.token_urlsafe(32))
    ssl_server, ssl_client, ca_file = _tls(root / "tls", java_home)
    security = Security(realm, principal, str(user_keytab), str(password_file), keytabs,
                        str(ca_file), str(http_secret))
    return security, {"ssl-server.xml": ssl_server, "ssl-client.xml": ssl_client}


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def _tls(tls: Path, java_home: Path) -> tuple[dict[str, str], dict[str, str], Path]:
    """A self-signed certificate for ``localhost`` in a PKCS12 keystore, and a truststore
    holding it. keytool reads the passwords from its environment, never from argv."""
    tls.mkdir(mode=0o700, parents=True, exist_ok=True)
    keystore, truststore, ca_file = tls / "keystore.p12", tls / "truststore.p12", tls / "ca.pem"
    key_password, trust_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    env = {**os.environ, "ZR_KEY_PASSWORD": key_password, "ZR_TRUST_PASSWORD": trust_password}
    keytool = str(java_home / "bin" / "keytool")
    steps = [
        ["-genkeypair", "-alias", HOSTNAME, "-keyalg", "RSA", "-keysize", "2048",
         "-validity", "30", "-dname", f"CN={HOSTNAME}",
         "-ext", f"SAN=dns:{HOSTNAME},ip:127.0.0.1", "-storetype", "PKCS12",
         "-keystore", str(keystore), "-storepass:env", "ZR_KEY_PASSWORD",
         "-keypass:env", "ZR_KEY_PASSWORD"],
        ["-exportcert", "-rfc", "-alias", HOSTNAME, "-keystore", str(keystore),
         "-storepass:env", "ZR_KEY_PASSWORD", "-file", str(ca_file)],
        # A truststore of public certificates, neither encrypted nor MACed (as Java's own
        # cacerts): clients load it with no password.
        ["-J-Dkeystore.pkcs12.certProtectionAlgorithm=NONE",
         "-J-Dkeystore.pkcs12.macAlgorithm=NONE", "-importcert", "-noprompt",
         "-alias", HOSTNAME, "-file", str(ca_file), "-storetype", "PKCS12",
         "-keystore", str(truststore), "-storepass:env", "ZR_TRUST_PASSWORD"],
    ]
    for step in steps:
        try:
            # umask 077: the keystores are born private.
            result = subprocess.run([keytool, *step], env=env, capture_output=True, text=True,
                                    timeout=120, umask=0o077)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KerberosError(f"keytool failed to run ({exc}); the local Hadoop's TLS "
                                f"certificate needs {java_home}'s keytool.") from None
        if result.returncode != 0:
            raise KerberosError(f"keytool {' '.join(step[:3])} failed making the local "
                                f"Hadoop's TLS certificate: {result.stderr or result.stdout}")
    os.chmod(ca_file, 0o644)  # a certificate is public
    server = {
        "ssl.server.keystore.type": "pkcs12",
        "ssl.server.keystore.location": str(keystore),
        "ssl.server.keystore.password": key_password,
        "ssl.server.keystore.keypassword": key_password,
        "ssl.server.truststore.type": "pkcs12",
        "ssl.server.truststore.location": str(truststore),
        "ssl.server.truststore.password": trust_password,
    }
    # No password in the clients' file: it goes where Spark uploads HADOOP_CONF_DIR, and a
    # truststore holds only the public certificate (Hadoop loads it without one).
    client = {
        "ssl.client.truststore.type": "pkcs12",
        "ssl.client.truststore.location": str(truststore),
    }
    return server, client, ca_file


def secure_overrides(security: Security) -> dict[str, dict[str, str]]:
    """The configuration keys of a secure cluster, file by file (addresses apart)."""
    realm = security.realm.name
    keytabs = security.keytabs
    http = {"principal": f"HTTP/_HOST@{realm}", "keytab": keytabs["http"]}
    return {
        "core-site.xml": {
            "hadoop.security.authentication": "kerberos",
            "hadoop.security.authorization": "true",
            "hadoop.rpc.protection": "authentication",
            # Services map to the users real clusters run them as; users to their first
            # part. [2:$1/$2@$0], not Hadoop's documented [2:$1@$0], which formats
            # nn/localhost@R as nn@R, so that the rule's regex never matches.
            "hadoop.security.auth_to_local": "\n".join([
                f"RULE:[2:$1/$2@$0](nn/.*@{realm})s/.*/hdfs/",
                f"RULE:[2:$1/$2@$0](dn/.*@{realm})s/.*/hdfs/",
                f"RULE:[2:$1/$2@$0](rm/.*@{realm})s/.*/yarn/",
                f"RULE:[2:$1/$2@$0](nm/.*@{realm})s/.*/yarn/",
                "DEFAULT"]),
            "hadoop.http.filter.initializers":
                "org.apache.hadoop.security.AuthenticationFilterInitializer",
            "hadoop.http.authentication.type": "kerberos",
            "hadoop.http.authentication.simple.anonymous.allowed": "false",
            "hadoop.http.authentication.kerberos.principal": http["principal"],
            "hadoop.http.authentication.kerberos.keytab": http["keytab"],
            "hadoop.http.authentication.signature.secret.file": security.http_secret,
            # The ResourceManager may ask the NameNode for a user's tokens (below).
            "hadoop.proxyuser.yarn.hosts": "*",
            "hadoop.proxyuser.yarn.groups": "*",
        },
        "hdfs-site.xml": {
            "dfs.block.access.token.enable": "true",
            "dfs.namenode.kerberos.principal": f"nn/_HOST@{realm}",
            "dfs.namenode.keytab.file": keytabs["hdfs"],
            "dfs.namenode.kerberos.internal.spnego.principal": http["principal"],
            "dfs.datanode.kerberos.principal": f"dn/_HOST@{realm}",
            "dfs.datanode.keytab.file": keytabs["hdfs"],
            "dfs.web.authentication.kerberos.principal": http["principal"],
            "dfs.web.authentication.kerberos.keytab": http["keytab"],
            "dfs.data.transfer.protection": "authentication",
            "dfs.http.policy": "HTTPS_ONLY",
            "dfs.permissions.enabled": "true",
        },
        "yarn-site.xml": {
            "yarn.resourcemanager.principal": f"rm/_HOST@{realm}",
            "yarn.resourcemanager.keytab": keytabs["yarn"],
            "yarn.nodemanager.principal": f"nm/_HOST@{realm}",
            "yarn.nodemanager.keytab": keytabs["yarn"],
            "yarn.resourcemanager.webapp.spnego-principal": http["principal"],
            "yarn.resourcemanager.webapp.spnego-keytab-file": http["keytab"],
            "yarn.nodemanager.webapp.spnego-principal": http["principal"],
            "yarn.nodemanager.webapp.spnego-keytab-file": http["keytab"],
            "yarn.acl.enable": "true",
            "yarn.admin.acl": "yarn",
            "yarn.http.policy": "HTTP_ONLY",
            # An application that outlives its first HDFS tokens still has its logs
            # aggregated: near their end the ResourceManager gets the NodeManagers new ones,
            # as clusters running long services set it.
            "yarn.resourcemanager.proxy-user-privileges.enabled": "true",
        },
        # With the defaults ("*") any user could kill any application even with
        # yarn.acl.enable. The root queue closed (" " is nobody; children inherit by OR),
        # the leaves open to submit: only owners and yarn.admin.acl kill.
        "capacity-scheduler.xml": {
            "yarn.scheduler.capacity.root.acl_submit_applications": " ",
            "yarn.scheduler.capacity.root.acl_administer_queue": " ",
            **{f"yarn.scheduler.capacity.root.{queue}.{acl}": value
               for queue in ("default", "batch", "tiny", "adhoc")
               for acl, value in (("acl_submit_applications", "*"),
                                  ("acl_administer_queue", " "))},
        },
    }
