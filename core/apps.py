from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = _("Audit")

    def ready(self) -> None:
        from . import checks, signals  # noqa: F401
