"""The user's Kerberos login, checked before anything is submitted to a secure cluster.

Hadoop does not fail when a user without a ticket starts a client: the first RPC does,
deep in a Java stack, after the Spark JVM started. So zoo_ray checks first, on the
gateway: that ``KRB5_CONFIG`` (if set) exists; with ``principal=``/``keytab=``, that the
keytab is readable, holds the principal, and that the KDC knows it; without them, that the
ticket cache holds a valid ticket, and for how long. Each problem is a typed error naming
the fix; nothing reaches YARN. Runs on the gateway, in the driver's process.
"""
from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache import digest
from .errors import KerberosError
from .hadoop_conf import HadoopConf
from .spnego import INDEFINITE, Credentials, credential_lifetime, verify_login

__all__ = ["Login", "check_login", "driver_credentials", "keytab_principals",
           "krb5_java_options", "secure", "tokens_checked"]

logger = logging.getLogger(__name__)

#: What HDFS says of a delegation token that ended (its renewal date or its lifetime).
_EXPIRED_TOKEN = ("has expired", "is expired", "can't be found in cache")


@dataclass(frozen=True)
class Login:
    """How the user is logged in to a secure cluster.

    Parameters
    ----------
    principal, keytab : str, optional
        The keytab login (``principal=``/``keytab=``); both None for a ticket cache.
    ends_at : float, optional
        When the ticket cache's ticket ends (seconds since the epoch); None with a keytab,
        from which a new ticket can always be had.
    krb5_config : str, optional
        The ``KRB5_CONFIG`` the login was checked with (None: ``/etc/krb5.conf``).
    """

    principal: str | None = None
    keytab: str | None = None
    krb5_config: str | None = None
    ends_at: float | None = None

    @property
    def java_options(self) -> list[str]:
        """The JVM options Spark's processes need for this login: Java reads no
        ``KRB5_CONFIG``, so a realm named there is passed as ``java.security.krb5.conf``."""
        return krb5_java_options(self.krb5_config)

    @property
    def credentials(self) -> Credentials | None:
        """The credential zoo_ray's own REST calls present: from the keytab, in a ticket
        cache of this process's memory; None for the user's ticket cache."""
        if not self.keytab:
            return None
        # One cache per login: a cache holding another principal's ticket would be used
        # as it is.
        return Credentials(f"MEMORY:zoo-ray-{digest(str(self.principal), self.keytab)}",
                           self.keytab, self.principal)


def krb5_java_options(krb5_conf: str | os.PathLike[str] | None) -> list[str]:
    """The JVM option naming a realm's ``krb5.conf`` (none for ``/etc/krb5.conf``)."""
    return [f"-Djava.security.krb5.conf={krb5_conf}"] if krb5_conf else []


def secure(conf: HadoopConf) -> bool:
    """Whether the cluster ``conf`` describes wants Kerberos."""
    return (conf.get("hadoop.security.authentication") or "simple").lower() == "kerberos"


def check_login(principal: str | None, keytab: str | None) -> Login:
    """Check the user's login to a secure cluster (see the module's description).

    Raises
    ------
    KerberosError
        ``KRB5_CONFIG`` names no file; the keytab is missing, unreadable, does not hold
        ``principal``, or the KDC refuses it; no ticket, or an expired one.
    """
    krb5_config = os.environ.get("KRB5_CONFIG") or None
    if krb5_config and ":" in krb5_config:
        raise KerberosError(
            f"KRB5_CONFIG={krb5_config} lists several files, and Spark's JVMs take one "
            "(-Djava.security.krb5.conf). Point KRB5_CONFIG at one file that names your "
            "realm.")
    if krb5_config and not Path(krb5_config).is_file():
        raise KerberosError(
            f"KRB5_CONFIG={krb5_config} names no file. Point it at your realm's krb5.conf "
            "(or unset it to use /etc/krb5.conf).")
    if keytab and principal:
        return _check_keytab(principal, keytab, krb5_config)
    seconds = credential_lifetime()
    ends_at = None if seconds == INDEFINITE else time.time() + seconds
    if ends_at is not None:
        until = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ends_at))
        logger.info("Kerberos ticket valid until %s (%d h %02d min %02d s more); renew it "
                    "with `kinit -R` (or kinit again) before then, or pass principal= and "
                    "keytab= for jobs that run longer.", until, seconds // 3600,
                    seconds % 3600 // 60, seconds % 60)
    return Login(krb5_config=krb5_config, ends_at=ends_at)


@contextmanager
def tokens_checked(what: str) -> Iterator[None]:
    """Run a Spark job of zoo_ray's: a failure because HDFS refused an expired delegation
    token becomes a KerberosError naming the fix, not a Java stack.

    Parameters
    ----------
    what : str
        The zoo_ray call the job belongs to, for the message.

    Raises
    ------
    KerberosError
        The job failed on an expired token (chained to Spark's error).
    """
    try:
        yield
    except Exception as exc:
        text = str(exc)
        if "InvalidToken" not in text or not any(sign in text for sign in _EXPIRED_TOKEN):
            raise
        raise KerberosError(
            f"{what} failed: HDFS refused the application's delegation token, which has "
            "expired. Spark renews tokens from a keytab, or from the ticket cache while its "
            "ticket lasts: start the application again with principal= and keytab= "
            "(zoo-ray submit --principal --keytab), or after `kinit` with a renewable ticket."
        ) from exc


def driver_credentials(spark_conf: Any) -> Credentials | None:
    """The credential of the running application's keytab login (``spark_conf``, the
    SparkContext's), for the driver's own REST calls; None for a ticket cache."""
    principal = spark_conf.get("spark.kerberos.principal", None)
    keytab = spark_conf.get("spark.kerberos.keytab", None)
    return Login(principal, keytab).credentials if principal and keytab else None


def _check_keytab(principal: str, keytab: str, krb5_config: str | None) -> Login:
    path = Path(keytab)
    if not path.is_file():
        raise KerberosError(f"keytab={keytab} does not exist. Pass the path of your keytab "
                            "(ask your Kerberos admins for one, or export it with ktutil).")
    if not os.access(path, os.R_OK):
        raise KerberosError(f"keytab={keytab} is not readable by this user. Make it yours "
                            f"and private: chown $USER {keytab} && chmod 600 {keytab}")
    held = keytab_principals(path)
    matching = [name for name in held if _same_principal(principal, name)]
    if not matching:
        raise KerberosError(
            f"keytab={keytab} does not hold principal={principal}; it holds "
            f"{', '.join(sorted(held)) or 'no key at all'}. Pass the principal it holds, or "
            "a keytab with this principal's keys.")
    login = Login(principal=principal, keytab=str(path), krb5_config=krb5_config)
    # The KDC must know and accept it: fail here, not in a Java stack after submitting.
    credentials = login.credentials
    assert credentials is not None
    verify_login(credentials, matching[0].rsplit("@", 1)[1])
    return login


def _same_principal(asked: str, held: str) -> bool:
    # A principal without a realm means the default realm; compare names then.
    return asked == held or ("@" not in asked and held.split("@")[0] == asked)


def keytab_principals(path: Path) -> set[str]:
    """The principals a keytab file (MIT format 0x502, what kadmin and ktutil write) holds.

    Raises
    ------
    KerberosError
        The file is not a keytab.
    """
    data = path.read_bytes()
    if data[:2] != b"\x05\x02":
        raise KerberosError(f"{path} is not a Kerberos keytab (version 0x{data[:2].hex()}); "
                            "pass the keytab file itself.")
    principals, offset = set(), 2
    try:
        while offset + 4 <= len(data):
            (size,) = struct.unpack_from(">i", data, offset)
            offset += 4
            if size == 0:  # MIT's end of entries (it writes one before appending)
                break
            if size == -2**31:
                raise struct.error("an entry of size INT32_MIN")
            if size < 0:  # a deleted entry's hole
                offset += -size
                continue
            entry = data[offset:offset + size]
            offset += size
            (count,) = struct.unpack_from(">H", entry, 0)
            realm, at = _counted(entry, 2)
            parts = []
            for _ in range(count):
                part, at = _counted(entry, at)
                parts.append(part)
            principals.add(f"{'/'.join(parts)}@{realm}")
    except struct.error:
        raise KerberosError(f"{path} is a damaged keytab; export it again.") from None
    return principals


def _counted(data: bytes, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from(">H", data, offset)
    start = offset + 2
    if start + length > len(data):
        raise struct.error("counted string past the entry's end")
    return data[start:start + length].decode(errors="replace"), start + length
