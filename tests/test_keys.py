"""The three keys: read from the environment or .env.local, which `manage.py generate_keys` fills once.

Outside DEBUG, nothing starts without them (linebot.E001).
"""
import os
import runpy
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from linebot_site.settings import read_keys_file

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("SECRET_KEY", "FIELD_ENCRYPTION_KEY", "AUDIT_HMAC_KEY")
# What settings fall back to when neither the environment nor the keys file sets a key.
NO_KEYS = {
    "SECRET_KEY": "django-insecure-development-key-set-SECRET_KEY",
    "FIELD_ENCRYPTION_KEY": "",
    "AUDIT_HMAC_KEY": "django-insecure-audit:django-insecure-development-key-set-SECRET_KEY",
}
GOOD_KEYS = {
    "SECRET_KEY": "s3cret-" * 10,
    "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "AUDIT_HMAC_KEY": "hm4c-" * 10,
}
PRINT_KEYS = "from django.conf import settings as s; print(s.SECRET_KEY, s.FIELD_ENCRYPTION_KEY, s.AUDIT_HMAC_KEY)"


def manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Runs manage.py as a fresh process that sees only `env` and its own keys file."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={
            "PATH": os.environ["PATH"],
            "DJANGO_SETTINGS_MODULE": "linebot_site.settings",
            "KEYS_FILE": str(tmp_path / ".env.local"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_generate_keys_writes_random_keys_once_and_settings_read_them(tmp_path):
    result = manage(tmp_path, "generate_keys")
    assert result.returncode == 0, result.stderr
    keys_file = tmp_path / ".env.local"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    written = read_keys_file(keys_file)
    assert sorted(written) == sorted(KEYS)
    assert len(written["SECRET_KEY"]) >= 50 and len(set(written["SECRET_KEY"])) >= 5  # Django's security.W009
    Fernet(written["FIELD_ENCRYPTION_KEY"])  # a valid key, "=" padding and all
    assert len(written["AUDIT_HMAC_KEY"]) >= 32

    before = keys_file.read_text()
    assert manage(tmp_path, "generate_keys").returncode == 0
    assert keys_file.read_text() == before, "a second run must keep the keys"

    shown = manage(tmp_path, "shell", "-v", "0", "-c", PRINT_KEYS)
    assert shown.stdout.split() == [written[name] for name in KEYS], shown.stderr


def test_the_environment_wins_over_the_keys_file(tmp_path):
    manage(tmp_path, "generate_keys")
    written = read_keys_file(tmp_path / ".env.local")
    shown = manage(tmp_path, "shell", "-v", "0", "-c", PRINT_KEYS, SECRET_KEY="from-the-environment-" * 3)
    assert shown.stdout.split() == ["from-the-environment-" * 3, written["FIELD_ENCRYPTION_KEY"],
                                    written["AUDIT_HMAC_KEY"]], shown.stderr


def test_generate_keys_writes_only_what_the_environment_does_not_set(tmp_path):
    result = manage(tmp_path, "generate_keys", SECRET_KEY="s" * 10 + "ecret-from-env-" * 4)
    assert "Wrote FIELD_ENCRYPTION_KEY, AUDIT_HMAC_KEY" in result.stdout, result.stderr
    assert sorted(read_keys_file(tmp_path / ".env.local")) == ["AUDIT_HMAC_KEY", "FIELD_ENCRYPTION_KEY"]


def test_generate_keys_completes_a_file_and_tightens_its_mode(tmp_path):
    keys_file = tmp_path / ".env.local"
    keys_file.write_text("# mine\nSECRET_KEY=" + "k" * 60)  # no final newline
    keys_file.chmod(0o644)
    assert manage(tmp_path, "generate_keys").returncode == 0
    written = read_keys_file(keys_file)
    assert written["SECRET_KEY"] == "k" * 60 and sorted(written) == sorted(KEYS)
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600


def test_read_keys_file(tmp_path):
    assert read_keys_file(tmp_path / "missing") == {}
    (tmp_path / "keys").write_text("# a comment\n\n  NAME = a=b= \nnot a pair\n# OTHER=x\n")
    assert read_keys_file(tmp_path / "keys") == {"NAME": "a=b="}


def key_errors(**overrides) -> list:
    """Runs the checks as `manage.py check` would (no deployment checks); our errors only."""
    with override_settings(**overrides):
        return [m for m in run_checks(include_deployment_checks=False) if m.id.startswith("linebot.")]


def test_without_keys_and_debug_off_the_check_refuses_and_says_how_to_fix_it():
    (error,) = key_errors(DEBUG=False, **NO_KEYS)
    assert error.id == "linebot.E001" and error.is_serious()
    assert "SECRET_KEY, FIELD_ENCRYPTION_KEY, AUDIT_HMAC_KEY not set" in error.msg
    assert "manage.py generate_keys" in error.hint and "generate_encryption_key" in error.hint


def test_the_check_names_only_the_missing_keys():
    (error,) = key_errors(DEBUG=False, **{**GOOD_KEYS, "AUDIT_HMAC_KEY": f"django-insecure-audit:{GOOD_KEYS['SECRET_KEY']}"})
    assert error.msg.startswith("AUDIT_HMAC_KEY not set")
    (error,) = key_errors(DEBUG=False, **{**GOOD_KEYS, "FIELD_ENCRYPTION_KEY": ""})
    assert error.msg.startswith("FIELD_ENCRYPTION_KEY not set")


def test_with_the_keys_set_the_check_passes():
    assert key_errors(DEBUG=False, **GOOD_KEYS) == []


def test_debug_runs_on_the_development_keys():
    assert key_errors(DEBUG=True, **NO_KEYS) == []


@pytest.mark.parametrize("value", ["not-a-fernet-key", f"{GOOD_KEYS['FIELD_ENCRYPTION_KEY']},short", ","])
def test_a_malformed_encryption_key_is_an_error(value):
    (error,) = key_errors(DEBUG=False, **{**GOOD_KEYS, "FIELD_ENCRYPTION_KEY": value})
    assert error.id == "linebot.E002"


def test_a_newcomer_is_refused_until_generate_keys_then_runs(tmp_path):
    refused = manage(tmp_path, "check")
    assert refused.returncode == 1
    assert "linebot.E001" in refused.stderr and "SECRET_KEY, FIELD_ENCRYPTION_KEY, AUDIT_HMAC_KEY" in refused.stderr
    assert manage(tmp_path, "check", DEBUG="true").returncode == 0

    assert manage(tmp_path, "generate_keys").returncode == 0
    checked = manage(tmp_path, "check")
    assert checked.returncode == 0, checked.stderr


def test_the_wsgi_application_refuses_to_load_without_keys():
    """gunicorn imports linebot_site.wsgi and runs no checks of its own."""
    with override_settings(DEBUG=False, **NO_KEYS), pytest.raises(ImproperlyConfigured, match="linebot.E001"):
        runpy.run_module("linebot_site.wsgi")
    with override_settings(DEBUG=False, **GOOD_KEYS):
        assert callable(runpy.run_module("linebot_site.wsgi")["application"])


def test_the_asgi_application_refuses_to_load_without_keys():
    with override_settings(DEBUG=False, **NO_KEYS), pytest.raises(ImproperlyConfigured, match="linebot.E001"):
        runpy.run_module("linebot_site.asgi")


def test_qcluster_refuses_to_start_without_keys(monkeypatch):
    started = []

    class Cluster:
        def start(self):
            started.append(self)

        def stop(self):
            pass

    monkeypatch.setattr("django_q.management.commands.qcluster.Cluster", Cluster)
    with override_settings(DEBUG=False, **NO_KEYS), pytest.raises(SystemCheckError, match="linebot.E001"):
        call_command("qcluster", "--run-once", skip_checks=False)
    assert started == []


def test_generate_encryption_key_runs_without_keys(tmp_path):
    """The check's hint suggests it, so the check must not stop it."""
    result = manage(tmp_path, "generate_encryption_key")
    assert result.returncode == 0, result.stderr
    Fernet(result.stdout.strip())
