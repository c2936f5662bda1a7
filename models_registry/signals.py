"""A changed backend is checked afresh, not shown with its old health."""
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from . import selectors
from .models import ModelBackend


@receiver([post_save, post_delete], sender=ModelBackend)
def forget_backend_health(**kwargs) -> None:
    selectors.forget_backend_health()
