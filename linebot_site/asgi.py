import os

from django.core.asgi import get_asgi_application
from django.core.checks import Tags, run_checks
from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "linebot_site.settings")
application = get_asgi_application()

# As in wsgi.py: ASGI servers run no system checks either.
if errors := [str(e) for e in run_checks(tags=[Tags.security]) if e.is_serious() and not e.is_silenced()]:
    raise ImproperlyConfigured("\n".join(errors))
