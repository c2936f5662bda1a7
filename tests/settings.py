"""The site's settings with keys of the test run's own, so the suite needs no .env.local.

They go into the environment before the site's settings read it, so the servers and
workers the end-to-end tests start use the same keys as the tests.
"""
import os
import secrets
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet

os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("FIELD_ENCRYPTION_KEY", Fernet.generate_key().decode())
os.environ.setdefault("AUDIT_HMAC_KEY", secrets.token_urlsafe(32))

from linebot_site.settings import *  # noqa: E402, F401, F403

# Each run's media in a folder of its own, never in the work tree.
LINEBOT_MEDIA_ROOT = Path(tempfile.gettempdir()) / f"linebot-test-media-{os.getpid()}"  # noqa: F405
