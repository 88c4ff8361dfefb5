"""The ``zoo-ray`` command line without a cluster: help with examples, one-line errors,
and how a submitted script's exit is turned into the exit code."""
from __future__ import annotations

import subprocess
import sys

import pytest

from zoo_ray.applications import AppRecord
from zoo_ray.cli import _parser, main
from zoo_ray.submit import run_script

COMMANDS = [["submit"], ["pack"], ["status"], ["stop"], ["minicluster"], ["minicluster", "up"],
            ["minicluster", "status"], ["minicluster", "down"], ["logs"], ["demo"], []]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "zoo-ray")
def test_every_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args([*command, "--help"])
    assert exited.value.code == 0
    examples = capsys.readouterr().out.split("examples:", 1)[1]
    assert f"zoo-ray {' '.join(command)}".strip() in examples


def test_a_bad_conf_pair_is_one_line_naming_the_form(capsys, tmp_path):
    script = tmp_path / "job.py"
    script.write_text("")
    assert main(["submit", "--conf", "novalue", str(script)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "KEY=VALUE" in err


def test_submit_passes_the_kerberos_login_to_init_spark_on_yarn(capsys, tmp_path):
    script = tmp_path / "job.py"
    script.write_text("")
    # Checked with init_spark_on_yarn's arguments, before anything starts.
    assert main(["submit", "--principal", "alice@EXAMPLE.COM", str(script)]) == 2
    assert "principal= and keytab= together" in capsys.readouterr().err


def test_pack_takes_a_whole_keytab_login_or_none(capsys):
    # Checked first: no configuration read, no JVM started.
    assert main(["pack", "--keytab", "/home/alice/alice.keytab"]) == 2
    err = capsys.readouterr().err
    assert "principal= and keytab= together" in err and err.count("\n") == 1


def test_env_options_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(["submit", "--conda-name", "a", "--env-prefix", "/b", "x.py"])
    assert exited.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_submit_checks_an_elastic_range_before_anything_starts(capsys, tmp_path):
    script = tmp_path / "job.py"
    script.write_text("")
    args = _parser().parse_args(["submit", "--max-ray-nodes", "4", "--idle-timeout", "2m",
                                 "job.py"])
    assert (args.min_ray_nodes, args.max_ray_nodes, args.idle_timeout) == (None, 4, "2m")
    assert main(["submit", "--min-ray-nodes", "3", "--max-ray-nodes", "2", str(script)]) == 2
    err = capsys.readouterr().err
    assert "min_ray_nodes <= max_ray_nodes" in err and err.count("\n") == 1
    assert main(["submit", "--max-ray-nodes", "2", "--idle-timeout", "soon", str(script)]) == 2
    assert "is not a duration" in capsys.readouterr().err


def test_submit_and_the_local_hadoop_take_gpus():
    assert _parser().parse_args(["submit", "--executor-gpus", "2", "job.py"]).executor_gpus == 2
    assert _parser().parse_args(["minicluster", "up", "--gpus", "2"]).gpus == 2


def test_script_arguments_are_passed_through_unparsed():
    args = _parser().parse_args(["submit", "--num-executors", "3", "job.py", "--epochs", "3",
                                 "--num-executors", "9"])
    assert args.num_executors == 3 and args.script == "job.py"
    assert args.args == ["--epochs", "3", "--num-executors", "9"]


@pytest.mark.parametrize("body, code", [
    ("pass", 0), ("import sys; sys.exit()", 0), ("import sys; sys.exit(7)", 7),
    ("raise ValueError('boom')", 1), ("import sys; sys.exit('bye')", 1),
])
def test_run_script_returns_what_python_would_exit_with(body, code, tmp_path, capsys):
    script = tmp_path / "s.py"
    script.write_text(body)
    argv, path = list(sys.argv), list(sys.path)
    assert run_script(script, ["a"]) == code
    assert sys.argv == argv and sys.path == path
    expected = subprocess.run([sys.executable, str(script)], capture_output=True).returncode
    assert expected == code


def test_run_script_runs_as_main_with_its_arguments_and_directory(tmp_path):
    (tmp_path / "helper.py").write_text("VALUE = 41\n")
    out = tmp_path / "out"
    script = tmp_path / "s.py"
    script.write_text("import sys, helper\n"
                      "if __name__ == '__main__':\n"
                      f"    out = open({str(out)!r}, 'w')\n"
                      "    out.write(repr(sys.argv[1:]) + str(helper.VALUE))\n")
    assert run_script(script, ["--x", "1"]) == 0
    assert out.read_text() == "['--x', '1']41"


def test_run_script_lets_ctrl_c_through_for_the_caller_to_clean_up(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        run_script(script, [])


def test_application_ids_are_checked_before_use(capsys):
    assert main(["stop", "../../etc/passwd"]) == 2
    assert "is not a YARN application id" in capsys.readouterr().err


def test_an_app_record_round_trips_and_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_RAY_CACHE_DIR", str(tmp_path))
    record = AppRecord(app_id="application_1_0001", driver_pid=1, gateway_manager_pid=2,
                       address="198.18.0.11:6379",
                       nodes=[{"role": "head", "container": "container_1", "pid": 3}])
    assert AppRecord.from_json(record.to_json()) == record
    record.write()
    assert AppRecord.read(record.app_id) == record
    AppRecord.remove(record.app_id)
    AppRecord.remove(record.app_id)  # idempotent
    assert AppRecord.read(record.app_id) is None


def test_token_lifetimes_without_kerberos_are_one_line_naming_the_fix(capsys, tmp_path):
    # Refused by the spec before anything starts.
    assert main(["minicluster", "up", "--dir", str(tmp_path), "--token-max-lifetime",
                 "300"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "set kerberos=True" in err
    assert not (tmp_path / "state.json").exists()
