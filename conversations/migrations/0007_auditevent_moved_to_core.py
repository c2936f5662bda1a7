"""AuditEvent now belongs to `core`; its table stays where it is."""
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("conversations", "0006_message_indexes"),
        ("core", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="AuditEvent")],
            database_operations=[],
        ),
    ]
