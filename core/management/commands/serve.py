"""manage.py serve — the web server (gunicorn) and a task worker (qcluster) together; Ctrl-C stops both."""
import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.supervisor import supervise


class Command(BaseCommand):
    help = ("Runs gunicorn and `manage.py qcluster` side by side until Ctrl-C (or SIGTERM), which stops both "
            "gracefully; a second Ctrl-C stops them at once. What `make run` runs.")

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--web-workers", type=int, default=int(os.environ.get("WEB_WORKERS") or 2),
                            help="gunicorn worker processes (default: WEB_WORKERS, else 2)")
        parser.add_argument("--grace", type=float, default=30.0,
                            help="seconds to wait for a graceful stop before killing (default 30)")

    def handle(self, *args, host: str, port: int, web_workers: int, grace: float, **options):
        if not 0 < port < 65536 or web_workers < 1:
            raise CommandError("--port must be 1-65535 and --web-workers at least 1.")
        root = str(settings.BASE_DIR)
        commands = {
            "gunicorn": [sys.executable, "-m", "gunicorn", "linebot_site.wsgi", "--bind", f"{host}:{port}",
                         "--workers", str(web_workers), "--access-logfile", "-"],
            "qcluster": [sys.executable, os.path.join(root, "manage.py"), "qcluster"],
        }
        status = supervise(commands=commands, cwd=root, grace=grace, say=lambda text: self.stdout.write(text))
        if status:
            sys.exit(status)
