"""Validation and audited writes shared by the apps' serializers and viewsets."""
import copy

from rest_framework import serializers

from core.audit import delete_with_audit, save_with_audit, snapshot


class ModelCleanMixin:
    """Serializer validation as the admin's ModelForm does it: the model's `full_clean()`
    (field validators, uniqueness, constraints), reported per field.

    `write_only_secrets` are never returned; left out or blank on an update, the stored
    value stays. `required_secrets` must be given when creating.
    """

    write_only_secrets: tuple[str, ...] = ()
    required_secrets: tuple[str, ...] = ()

    def validate(self, attrs):
        attrs = super().validate(attrs)
        for name in self.write_only_secrets:
            if not attrs.get(name):
                attrs.pop(name, None)
        model = self.Meta.model
        if self.instance is None:
            message = f"Required for a new {model._meta.verbose_name}."
            missing = {name: [message] for name in self.required_secrets if name not in attrs}
            if missing:
                raise serializers.ValidationError(missing)
        candidate = copy.copy(self.instance) if self.instance is not None else model()
        for name, value in attrs.items():
            setattr(candidate, name, value)
        candidate.full_clean()
        return attrs


class AuditedWritesMixin:
    """Creates, updates and deletes through `save_with_audit` / `delete_with_audit`, as
    the admin does, so the API's writes land in the audit log the same way."""

    audit_action: str
    # {field: action}: a change to one of these fields is audited as that action instead.
    audit_field_actions: dict[str, str] = {}

    def perform_create(self, serializer):
        instance = serializer.Meta.model(**serializer.validated_data)
        serializer.instance = save_with_audit(instance=instance, actor=self.request.user, before=None,
                                              action=self.audit_action, field_actions=self.audit_field_actions)

    def perform_update(self, serializer):
        instance = serializer.instance
        before = snapshot(instance)
        for name, value in serializer.validated_data.items():
            setattr(instance, name, value)
        serializer.instance = save_with_audit(instance=instance, actor=self.request.user, before=before,
                                              action=self.audit_action, field_actions=self.audit_field_actions)

    def perform_destroy(self, instance):
        delete_with_audit(instance=instance, actor=self.request.user, action=self.audit_action)
