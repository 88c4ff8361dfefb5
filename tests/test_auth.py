"""The driver's Ray authentication: any import order works (a fresh interpreter per case)."""
from __future__ import annotations

import textwrap

import pytest
from tests.fresh import run_python as _run


@pytest.mark.parametrize("imports", [
    "import ray\nimport zoo_ray",
    "from ray import data\nimport ray.util\nimport zoo_ray",
    "import zoo_ray\nimport ray",
])
def test_token_authentication_is_on_whatever_was_imported_first(imports):
    result = _run(imports + textwrap.dedent("""
        from pathlib import Path
        import os
        from ray._raylet import AuthenticationMode, get_authentication_mode
        from zoo_ray.auth import clear_driver_token, write_driver_token
        write_driver_token("a-token")
        assert get_authentication_mode() == AuthenticationMode.TOKEN
        path = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
        assert path.read_text() == "a-token" and path.stat().st_mode & 0o777 == 0o600
        # Ray would abort this driver 60 s after losing the GCS; Spark takes 120 s to
        # declare the head's executor lost when its host is cut off.
        assert os.environ["RAY_gcs_rpc_server_reconnect_timeout_s"] == "300"
        clear_driver_token()
        # The program's own ray.init() afterwards behaves as without zoo_ray.
        assert "RAY_AUTH_MODE" not in os.environ and not path.exists()
        assert "RAY_gcs_rpc_server_reconnect_timeout_s" not in os.environ
        assert get_authentication_mode() != AuthenticationMode.TOKEN
        print("ok")
    """))
    assert result.stdout.strip() == "ok", result.stderr[-2000:]


def test_a_mode_the_user_chose_is_not_overridden():
    result = _run(textwrap.dedent("""
        import os
        os.environ["RAY_AUTH_MODE"] = "disabled"
        import zoo_ray
        from zoo_ray.auth import write_driver_token
        from zoo_ray.errors import RayContextError
        try:
            write_driver_token("a-token")
        except RayContextError as exc:
            print("refused:", exc)
    """))
    assert "refused:" in result.stdout and "RAY_AUTH_MODE='disabled'" in result.stdout, \
        result.stderr[-2000:]
