"""AuditEvent moves here from `conversations`: the state only, the table stays as it is."""
from django.db import migrations, models


def move_content_type(apps, schema_editor):
    # Keeps the model's permissions (and the groups holding them) attached to it.
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    if not ContentType.objects.using(db).filter(app_label="core", model="auditevent").exists():
        ContentType.objects.using(db).filter(app_label="conversations", model="auditevent").update(app_label="core")


def move_content_type_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.using(schema_editor.connection.alias).filter(
        app_label="core", model="auditevent").update(app_label="conversations")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("conversations", "0006_message_indexes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="AuditEvent",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("created_at", models.DateTimeField(db_index=True, verbose_name="time")),
                        ("actor_id", models.IntegerField(blank=True, null=True, verbose_name="user id")),
                        ("actor_username", models.CharField(blank=True, default="", max_length=150, verbose_name="user")),
                        ("action", models.CharField(choices=[("view_conversation", "viewed a conversation"), ("redact", "redacted a message"), ("export", "exported conversations"), ("export_user", "exported a user's data"), ("verify_export", "verified an export"), ("erase_user", "erased a user"), ("purge", "purged expired messages"), ("retention_change", "changed retention"), ("preset_change", "changed a preset"), ("backend_change", "changed a backend"), ("channel_change", "changed a channel"), ("chat_change", "changed a chat"), ("privacy_change", "changed the privacy policy"), ("retry", "retried a message"), ("admin_login", "logged in to the admin")], max_length=32, verbose_name="action")),
                        ("target_type", models.CharField(blank=True, default="", max_length=64, verbose_name="target type")),
                        ("target_id", models.CharField(blank=True, default="", max_length=128, verbose_name="target id")),
                        ("details", models.JSONField(blank=True, default=dict, verbose_name="details")),
                    ],
                    options={
                        "verbose_name": "audit event",
                        "verbose_name_plural": "audit log",
                        "db_table": "conversations_auditevent",
                        "ordering": ["-created_at", "-id"],
                        "indexes": [models.Index(fields=["action", "-created_at"], name="audit_action_time")],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
