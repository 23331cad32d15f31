"""The ingest's write path, measured (docs/benchmarks.md, issue #8):
- the event log's task foreign key is enforced by ``tasks.apply`` (it locks the task in the
  same transaction), not by a deferred trigger per row at COMMIT;
- tasks leave 30 % of each page free, so the UPDATE every event causes stays on the page
  (a HOT update: no index entry is written) instead of moving the row.
"""

from typing import Any

import django.db.models.deletion
from django.db import migrations, models


def _fillfactor(value: int) -> Any:
    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return  # SQLite has no such setting
        table = schema_editor.quote_name(apps.get_model("tasks", "AsyncTask")._meta.db_table)
        schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = {value})")

    return run


class Migration(migrations.Migration):
    dependencies = [("tasks", "0005_event_log_traceparent")]

    operations = [
        migrations.AlterField(
            model_name="taskeventlog",
            name="task",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="events",
                to="tasks.asynctask",
            ),
        ),
        migrations.RunPython(_fillfactor(70), _fillfactor(100)),
    ]
