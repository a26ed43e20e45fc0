"""Configuration: environment variables override the TOML file, which overrides defaults."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.config import Settings, load_settings, mask_url, unknown_environment
from conveyor.errors import ConfigError


def test_defaults_give_the_embedded_setup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings(env={})
    assert (s.db_url, s.queue_url, s.storage_url) == ("sqlite:///conveyor.db", "sql", "file://./conveyor-data")
    assert s.lease_seconds == 60 and s.heartbeat_interval == 20 and s.reclaim_grace_seconds == 15
    assert (s.stream_key, s.stream_group, s.stream_maxlen) == ("conveyor:jobs", "conveyor:workers", 200000)
    assert all(src == "default" for _, src in s.masked().values())


def test_environment_overrides_the_file_which_overrides_defaults(tmp_path):
    cfg = tmp_path / "conveyor.toml"
    cfg.write_text('[conveyor]\ndb_url = "sqlite:///from-file.db"\nlease_seconds = 30\nconcurrency = 8\n')
    s = load_settings(env={"CONVEYOR_CONFIG": str(cfg), "CONVEYOR_LEASE_SECONDS": "12"})
    assert s.lease_seconds == 12 and s.sources["lease_seconds"] == "env CONVEYOR_LEASE_SECONDS"
    assert s.db_url == "sqlite:///from-file.db" and s.sources["db_url"] == f"file {cfg}"
    assert s.concurrency == 8
    assert s.queue_url == "sql" and "queue_url" not in s.sources
    assert s.heartbeat_interval == 4


def test_stream_names_use_their_documented_variables(tmp_path):
    s = load_settings(env={"CONVEYOR_STREAM_KEY": "k", "CONVEYOR_STREAM_GROUP": "g", "CONVEYOR_STREAM_MAXLEN": "9"},
                      path=None)
    assert (s.stream_key, s.stream_group, s.stream_maxlen) == ("k", "g", 9)


@pytest.mark.parametrize("env,message", [
    ({"CONVEYOR_LEASE_SECONDS": "soon"}, "lease_seconds must be float"),
    ({"CONVEYOR_LEASE_SECONDS": "10", "CONVEYOR_HEARTBEAT_SECONDS": "20"}, "heartbeat_seconds must be shorter"),
    ({"CONVEYOR_CONFIG": "/nonexistent/conveyor.toml"}, "does not exist"),
    ({"CONVEYOR_QUEUE_URL": "amqp://x"}, "unknown queue scheme"),
])
def test_bad_values_are_clear_errors(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


def test_bad_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text("lease_seconds = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(env={"CONVEYOR_CONFIG": str(bad)})
    bad.write_text("[conveyor]\nleese_seconds = 3\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(env={"CONVEYOR_CONFIG": str(bad)})


def test_secrets_are_masked():
    assert mask_url("postgresql://user:hunter2@db/x") == "postgresql://user:***@db/x"
    assert mask_url("redis://db:6379/0") == "redis://db:6379/0"
    s = Settings(db_url="postgresql://u:pw@h/d")
    assert "pw" not in str(s.masked()["db_url"][0])


def test_max_payload_bytes_defaults_to_1_mib_and_follows_env_then_file(tmp_path):
    assert load_settings(env={}, path=None).max_payload_bytes == 1_048_576
    cfg = tmp_path / "conveyor.toml"
    cfg.write_text("[conveyor]\nmax_payload_bytes = 4096\n")
    s = load_settings(env={"CONVEYOR_CONFIG": str(cfg)})
    assert s.max_payload_bytes == 4096 and s.sources["max_payload_bytes"] == f"file {cfg}"
    s = load_settings(env={"CONVEYOR_CONFIG": str(cfg), "CONVEYOR_MAX_PAYLOAD_BYTES": "2048"})
    assert s.max_payload_bytes == 2048 and s.sources["max_payload_bytes"] == "env CONVEYOR_MAX_PAYLOAD_BYTES"


@pytest.mark.parametrize("raw,message", [
    ("1MB", "environment CONVEYOR_MAX_PAYLOAD_BYTES: max_payload_bytes must be int, got '1MB'"),
    ("1.5", "must be int, got '1.5'"),
    ("0", "env CONVEYOR_MAX_PAYLOAD_BYTES: max_payload_bytes must be > 0"),
    ("-1", "must be > 0"),
])
def test_bad_max_payload_bytes_is_a_clear_error(raw, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(env={"CONVEYOR_MAX_PAYLOAD_BYTES": raw})


@pytest.mark.parametrize("value", ["1.5", "true"])
def test_integer_settings_in_the_file_are_not_truncated(tmp_path, value):
    cfg = tmp_path / "conveyor.toml"
    cfg.write_text(f"[conveyor]\nmax_payload_bytes = {value}\n")
    with pytest.raises(ConfigError, match=f"{cfg}: max_payload_bytes must be int"):
        load_settings(env={"CONVEYOR_CONFIG": str(cfg)})


def _cli(tmp_path, env: dict) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return subprocess.run([sys.executable, "-m", "conveyor", "config"], cwd=tmp_path, capture_output=True, text=True,
                          env={**base, "CONVEYOR_DB_URL": f"sqlite:///{tmp_path}/c.db", **env}, timeout=60)


def test_a_misspelled_variable_is_a_warning_naming_the_closest_setting(tmp_path):
    r = _cli(tmp_path, {"CONVEYOR_DATABASE_URL": "postgresql://db/x", "CONVEYOR_JUDGE_WORKSPACE_MB": "64",
                        "CONVEYOR_CAD_TIME_LIMIT": "30", "CONVEYOR_TEST_ANYTHING": "1"})
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: CONVEYOR_DATABASE_URL is not a Conveyor setting and no loaded plugin reads it; "
        "did you mean CONVEYOR_DB_URL?",
        "warning: CONVEYOR_JUDGE_WORKSPACE_MB is not a Conveyor setting and no loaded plugin reads it; "
        "did you mean CONVEYOR_JUDGE_WORKSPACE_MIB?"], r.stderr  # a plugin's own variable is known


def test_strict_config_makes_an_unknown_variable_a_one_line_error(tmp_path):
    r = _cli(tmp_path, {"CONVEYOR_STRICT_CONFIG": "1", "CONVEYOR_QUEUE": "redis://x", "CONVEYOR_NOPE": "1"})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "error: CONVEYOR_NOPE is not a Conveyor setting and no loaded plugin reads it; `conveyor config` lists the "
        "settings (and 1 more); CONVEYOR_STRICT_CONFIG=1 makes this an error"], r.stderr
    assert _cli(tmp_path, {"CONVEYOR_STRICT_CONFIG": "1"}).returncode == 0


def test_every_variable_the_code_reads_is_known():
    """Every CONVEYOR_* name in the core's and the built-in plugins' source is a setting, a core variable or
    declared by a plugin's ``conveyor_environment``, so none is ever reported as unknown."""
    from conveyor.plugins import load_plugins
    root = Path(__file__).resolve().parent.parent
    declared = [n for names in load_plugins(None).call_each("conveyor_environment") for n in names]
    found = {m for p in [*(root / "src").rglob("*.py"), *(root / "plugins").rglob("*.py")]
             for m in re.findall(r"CONVEYOR_[A-Z0-9_]*[A-Z0-9]\b", p.read_text())}
    assert unknown_environment(dict.fromkeys(found, "1"), declared) == []
