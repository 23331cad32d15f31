"""The event log's position carries the topic's epoch (docs/operations.md, "Re-creating the
events topic"): a re-created topic's offsets start again at 0, and without the epoch its
records collided with the old topic's rows ("position used by another event").

Rows logged before this migration get their task's last epoch when the task's last event
came from the same topic (one UPDATE): the epoch the consumer held when it applied them,
unless the topic was re-created in between. The rest stay blank, which the delivery rule
(``tasks.delivery``) matches with any epoch, as before.

It updates every row once and builds the new unique index; on a large log, writes to the
log wait until it is done (not measured here: run it in a quiet hour, docs/operations.md).
"""

from typing import Any

from django.db import migrations, models
from django.db.models import OuterRef, Subquery, Value
from django.db.models.functions import Coalesce


def _backfill(apps: Any, schema_editor: Any) -> None:
    log = apps.get_model("tasks", "TaskEventLog")
    task = apps.get_model("tasks", "AsyncTask")
    known = task.objects.filter(pk=OuterRef("task_id"), last_event_source=OuterRef("source"))
    log.objects.filter(epoch="").update(
        epoch=Coalesce(Subquery(known.values("last_event_epoch")[:1]), Value(""))
    )


class Migration(migrations.Migration):
    dependencies = [("tasks", "0006_ingest_write_path")]

    operations = [
        migrations.AddField(
            model_name="taskeventlog",
            name="epoch",
            # A default in the database too: the previous release's consume_events, still
            # running during a rollout (docs/deployment.md, "Migrations first"), inserts
            # log rows without the column.
            field=models.CharField(blank=True, db_default="", default="", max_length=64),
        ),
        migrations.RunPython(_backfill, migrations.RunPython.noop),
        migrations.RemoveConstraint(model_name="taskeventlog", name="unique_event_position"),
        migrations.AddConstraint(
            model_name="taskeventlog",
            constraint=models.UniqueConstraint(
                fields=("source", "partition", "offset", "epoch"), name="unique_event_position"
            ),
        ),
    ]
