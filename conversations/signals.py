"""Keeping caches and schedules in step with the database."""
from django.db.models.signals import post_delete, post_migrate, post_save
from django.dispatch import receiver

from . import selectors, services
from .models import LineChannel


@receiver([post_save, post_delete], sender=LineChannel)
def forget_cached_channels(**kwargs) -> None:
    selectors.forget_cached_channels()


@receiver(post_migrate)
def create_schedules(sender, **kwargs) -> None:
    if sender.name == "conversations":
        services.ensure_schedules()
