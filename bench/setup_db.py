"""Create the bench users and tasks in the bench database; write "uid token" and "uid task" files.

Run with Taskstream's settings (DJANGO_SETTINGS_MODULE=config.settings, DATABASE_URL pointing
at the bench database), after ``manage.py migrate``: ``python bench/setup_db.py N OUT_DIR``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from rest_framework_simplejwt.tokens import AccessToken  # noqa: E402

from tasks.models import AsyncTask  # noqa: E402


def main(count: int, out: Path) -> None:
    user_model = get_user_model()
    names = [f"bench{i:05d}" for i in range(count)]
    existing = set(user_model.objects.filter(username__in=names).values_list("username", flat=True))
    user_model.objects.bulk_create(
        [user_model(username=n, password="!") for n in names if n not in existing]
    )
    users = list(user_model.objects.filter(username__in=names).order_by("username"))
    have_task = set(
        AsyncTask.objects.filter(owner__in=users, kind="bench").values_list("owner_id", flat=True)
    )
    AsyncTask.objects.bulk_create(
        [AsyncTask(owner=u, kind="bench", params={}) for u in users if u.pk not in have_task]
    )
    task_of = dict(
        AsyncTask.objects.filter(owner__in=users, kind="bench")
        .order_by("created_at")
        .values_list("owner_id", "id")
    )
    tokens, tasks = [], []
    for user in users:
        token = AccessToken()
        token["user_id"] = user.pk
        tokens.append(f"{user.pk} {token}")
        tasks.append(f"{user.pk} {task_of[user.pk]}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokens.txt").write_text("\n".join(tokens) + "\n")
    (out / "tasks.txt").write_text("\n".join(tasks) + "\n")
    print(f"{len(users)} users ready")


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
