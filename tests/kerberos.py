"""Helpers of the tests that need a Kerberos realm: a real MIT KDC, no Hadoop."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from zoo_ray.errors import KerberosUnavailableError
from zoo_ray.minicluster import kdc as kdc_module
from zoo_ray.minicluster.kdc import Kdc, Realm, check_tools


def _tools_installed() -> bool:
    try:
        check_tools()
    except KerberosUnavailableError:
        return False
    return True


#: Skips without MIT Kerberos, except in CI, where .ci/run installs it and a skip would hide
#: a broken install.
needs_krb5 = pytest.mark.skipif(
    not _tools_installed() and os.environ.get("CI") != "true",
    reason="MIT Kerberos is not installed (.ci/run installs it)")


def started_realm(dir: Path) -> tuple[Realm, kdc_module.Daemon]:
    """A new realm in ``dir`` with its KDC running."""
    kdc = Kdc(dir)
    realm = kdc.create()
    return realm, kdc.start(realm)


def kinit(realm: Realm, ccache: Path, *args: str, password: str = "",
          ) -> subprocess.CompletedProcess:
    """``kinit args`` into the ticket cache ``ccache``, ``password`` on stdin."""
    env = realm.env()
    env["KRB5CCNAME"] = f"FILE:{ccache}"
    return subprocess.run([str(kdc_module._which("kinit")), *args], input=password,
                          capture_output=True, text=True, env=env, timeout=30)
