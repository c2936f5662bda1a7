"""The site's settings with keys of the test run's own, so the suite needs no .env.local.

They go into the environment before the site's settings read it, so the servers and
workers the end-to-end tests start use the same keys as the tests.
"""
import os
import secrets

from cryptography.fernet import Fernet

os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("FIELD_ENCRYPTION_KEY", Fernet.generate_key().decode())
os.environ.setdefault("AUDIT_HMAC_KEY", secrets.token_urlsafe(32))

from linebot_site.settings import *  # noqa: E402, F401, F403
