"""Keeping per-process caches and the periodic jobs in step with the database."""
from django.db.models.signals import post_delete, post_migrate, post_save
from django.dispatch import receiver

from models_registry.models import ModelBackend, SamplingPreset

from . import ingest, selectors, sweeper
from .models import Chat, LineChannel, PrivacyPolicy


@receiver([post_save, post_delete], sender=LineChannel)
def forget_cached_channels(**kwargs) -> None:
    selectors.forget_cached_channels()


@receiver([post_save, post_delete], sender=Chat)
def forget_cached_chats(**kwargs) -> None:
    ingest.forget_cached_chats()


@receiver([post_save, post_delete], sender=SamplingPreset)
@receiver([post_save, post_delete], sender=ModelBackend)
def forget_cached_presets(**kwargs) -> None:
    selectors.forget_cached_presets()


@receiver([post_save, post_delete], sender=PrivacyPolicy)
def forget_cached_policy(**kwargs) -> None:
    selectors.forget_cached_policy()


@receiver(post_migrate)
def create_schedules(sender, **kwargs) -> None:
    if sender.name == "conversations":
        sweeper.ensure_schedules()
