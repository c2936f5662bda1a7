"""The three keys: read from the environment or .env.local, which `manage.py generate_keys` fills once."""
import os
import stat
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from linebot_site.settings import read_keys_file

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("SECRET_KEY", "FIELD_ENCRYPTION_KEY", "AUDIT_HMAC_KEY")
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
