from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from rest_framework import serializers

from tasks.demo import MIN_STEP_MS, BadParams, DemoParams
from tasks.models import PUBLIC_FIELDS, AsyncTask


class TaskCreateSerializer(serializers.Serializer[Any]):
    """A task request. The body's JSON was checked by ``tasks.parsers`` (no NaN, NUL, lone
    surrogates, nesting past ``jsonsafe.MAX_DEPTH``); here: its shape, the size of
    ``params`` and the limits of the kinds the project runs."""

    kind = serializers.RegexField(
        r"^[a-z][a-z0-9_.-]{0,63}$",
        max_length=64,
        error_messages={"invalid": "kind must be lowercase letters, digits, '_', '.' or '-'."},
    )
    params = serializers.JSONField(required=False, default=dict)

    def validate_params(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise serializers.ValidationError("params must be a JSON object.")
        # What the outbox row, the Kafka record and the worker carry, whatever the encoding
        # of the request body was.
        size = len(orjson.dumps(value))
        limit = settings.TASKS_PARAMS_MAX_BYTES
        if size > limit:
            raise serializers.ValidationError(
                f"params must be at most {limit} bytes as compact UTF-8 JSON (got {size})."
            )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # The demo worker's limits, from the worker's own definition: refused here, not
        # accepted and then failed by the worker (or run as a burst of 10,000 events).
        if attrs["kind"] == "demo":
            try:
                DemoParams.parse(attrs["params"], min_step_ms=MIN_STEP_MS)
            except BadParams as exc:
                raise serializers.ValidationError({"params": [str(exc)]}) from None
        return attrs


class TaskSerializer(serializers.ModelSerializer[AsyncTask]):
    last_event_id = serializers.CharField(read_only=True, allow_null=True)

    class Meta:
        model = AsyncTask
        fields = [*PUBLIC_FIELDS, "last_event_id"]
        read_only_fields = fields
