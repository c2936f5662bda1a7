# The console's record of each channel's link with LINE; how answers were delivered.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0008_channel_notice_settings'),
    ]

    operations = [
        migrations.CreateModel(
            name='ChannelHealth',
            fields=[
                ('channel', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='health', serialize=False, to='conversations.linechannel')),
                ('last_event_at', models.DateTimeField(blank=True, null=True, verbose_name='last event received')),
                ('events_day', models.DateField(blank=True, null=True)),
                ('events_today', models.PositiveIntegerField(default=0)),
                ('last_verify_at', models.DateTimeField(blank=True, null=True, verbose_name='last verified by LINE')),
                ('signatures_rejected', models.PositiveIntegerField(default=0, verbose_name='signatures rejected')),
                ('last_rejected_at', models.DateTimeField(blank=True, null=True, verbose_name='last signature rejected')),
                ('pushes_month', models.DateField(blank=True, null=True)),
                ('pushes_this_month', models.PositiveIntegerField(default=0)),
                ('line_checked_at', models.DateTimeField(blank=True, null=True)),
                ('line_report', models.JSONField(blank=True, default=dict)),
            ],
            options={
                'verbose_name': 'channel health',
                'verbose_name_plural': 'channel health',
            },
        ),
        migrations.AddField(
            model_name='message',
            name='push_calls',
            field=models.PositiveSmallIntegerField(default=0, verbose_name='pushes'),
        ),
        migrations.AddField(
            model_name='message',
            name='push_reason',
            field=models.CharField(blank=True, choices=[('late', 'reply token too old'), ('no_token', 'no reply token'), ('refused', 'reply token refused by LINE'), ('retry', 'sent on a retry'), ('continued', 'rest of a long answer')], default='', max_length=16, verbose_name='pushed because'),
        ),
    ]
