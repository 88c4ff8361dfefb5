"""Where Spark's ApplicationMaster can run (zoo_ray.app_master), on the session's local
Hadoop (no Kerberos): the ResourceManager hands the submitter of an application with an
unmanaged ApplicationMaster the token that AM registers with. test_secure_cluster shows
the same probe gets none on Kerberos, which is why the AM stays in a container there."""
from __future__ import annotations

import psutil
from tests.e2e.helpers import wait_app_end
from tests.e2e.java_probe import AM_TOKEN_PROBE, run_probe


def test_without_kerberos_the_submitter_of_an_unmanaged_am_gets_its_token(cluster):
    report = run_probe(cluster, AM_TOKEN_PROBE)
    print(f"probe: {report}")
    assert report["attempt"] == "LAUNCHED", report
    assert report["user"] == report["caller"] == psutil.Process().username()
    assert report["token"] is True, report
    wait_app_end(cluster, report["app"])
