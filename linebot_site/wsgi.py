import os

from django.core.checks import Tags, run_checks
from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "linebot_site.settings")
application = get_wsgi_application()

# gunicorn runs no system checks, so a server started straight from it would otherwise
# serve with DEBUG off on the public development keys (linebot.E001). Only the security
# checks: they are cheap, and every worker runs them as it boots.
if errors := [str(e) for e in run_checks(tags=[Tags.security]) if e.is_serious() and not e.is_silenced()]:
    raise ImproperlyConfigured("\n".join(errors))

# The URLconf (and every view, admin and API module it names) now rather than at the first
# request: under `gunicorn --preload` and `manage.py serve` the workers then share it.
get_resolver().url_patterns
