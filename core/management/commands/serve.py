"""manage.py serve — the web server (gunicorn) and the task cluster (qcluster) together; Ctrl-C stops both.

Both are forked from this process after it has imported the site, its URLs, its tasks and
the client libraries they call (settings.PRELOAD_MODULES): every web and worker process
shares those pages instead of importing them again, which halves the memory of `make run`.
"""
import gc
import multiprocessing
import os
import sys
from collections.abc import Callable
from importlib import import_module

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.core.servers.basehttp import get_internal_wsgi_application
from django.db import connections
from django.urls import get_resolver
from django.utils import translation

from core.supervisor import supervise


class Command(BaseCommand):
    help = ("Runs gunicorn and the django-q2 cluster side by side until Ctrl-C (or SIGTERM), which stops both "
            "gracefully; a second Ctrl-C stops them at once. What `make run` runs.")

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--web-workers", type=int, default=int(os.environ.get("WEB_WORKERS") or 2),
                            help="gunicorn worker processes (default: WEB_WORKERS, else 2)")
        parser.add_argument("--web-threads", type=int, default=int(os.environ.get("WEB_THREADS") or 1),
                            help="threads per gunicorn worker; more than 1 uses gunicorn's gthread workers "
                                 "(default: WEB_THREADS, else 1: sync workers)")
        parser.add_argument("--grace", type=float, default=30.0,
                            help="seconds to wait for a graceful stop before killing (default 30)")

    def handle(self, *args, host: str, port: int, web_workers: int, web_threads: int, grace: float, **options):
        if not 0 < port < 65536 or web_workers < 1 or web_threads < 1:
            raise CommandError("--port must be 1-65535, --web-workers and --web-threads at least 1.")
        application = preload()
        commands = {
            "gunicorn": web_server(application, gunicorn_options(host=host, port=port, workers=web_workers,
                                                                  threads=web_threads)),
            "qcluster": task_cluster,
        }
        status = supervise(commands=commands, cwd=str(settings.BASE_DIR), grace=grace,
                           say=lambda text: self.stdout.write(text))
        if status:
            sys.exit(status)


def preload():
    """Imports what the forked processes would each import on their own; returns the WSGI app.

    Then: no database connection may cross the fork, and the garbage collector leaves what
    was loaded alone (`gc.freeze`), so a collection in a child does not write to, and so
    copy, every shared page.
    """
    application = get_internal_wsgi_application()  # the wsgi module also loads the URLconf
    for name in settings.PRELOAD_MODULES:
        import_module(name)
    # What a process would otherwise build at its first request: URL reversal, and the
    # translation catalogs (each language's, from every app).
    get_resolver()._populate()
    for code, _name in settings.LANGUAGES:
        with translation.override(code):
            translation.gettext("Home")
    connections.close_all()
    gc.collect()
    gc.freeze()
    return application


def gunicorn_options(*, host: str, port: int, workers: int, threads: int) -> dict:
    """The web server's layout: `workers` processes (sync, or gthread with `threads`), never recycled."""
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread" if threads > 1 else "sync",
        "threads": threads,
        "accesslog": "-",
        # Recycling a worker would throw away the pages it shares and load them afresh.
        "max_requests": 0,
        "preload_app": True,
        "proc_name": "linebot-web",
    }


def web_server(application, options: dict) -> Callable[[], None]:
    def gunicorn() -> None:
        from gunicorn.app.base import BaseApplication

        class Preloaded(BaseApplication):
            def load_config(self):
                for name, value in options.items():
                    self.cfg.set(name, value)

            def load(self):
                return application

        Preloaded().run()

    return gunicorn


def task_cluster() -> None:
    """`manage.py qcluster`, in this (forked) process; returns when the cluster has stopped."""
    call_command("qcluster")
    # The command returns once the cluster runs; its sentinel process ends when a stop
    # signal has stopped the cluster. (An interpreter would wait for it at exit.)
    for child in multiprocessing.active_children():
        child.join()
