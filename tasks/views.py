"""The task API: create, list, read and cancel your own tasks (JSON only)."""

from __future__ import annotations

from typing import Any

import structlog
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler

from tasks import services
from tasks.models import AsyncTask
from tasks.serializers import TaskCreateSerializer, TaskSerializer


class TaskViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[AsyncTask]
):
    serializer_class = TaskSerializer

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        if "pk" in kwargs:  # a task's own URL: its lines name it (the path does too)
            structlog.contextvars.bind_contextvars(task_id=kwargs["pk"])
        super().initial(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[AsyncTask]:
        # Another user's task is simply not found (404), never "forbidden": ids don't leak.
        return AsyncTask.objects.filter(owner_id=self.request.user.pk)

    def create(self, request: Request) -> Response:
        incoming = TaskCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        owner_id = request.user.pk
        assert owner_id is not None  # IsAuthenticated: never anonymous here
        task = services.create_task(
            owner_id,
            incoming.validated_data["kind"],
            incoming.validated_data["params"],
        )
        structlog.contextvars.bind_contextvars(task_id=str(task.id))
        return Response(TaskSerializer(task).data, status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        task = self.get_object()
        try:
            task = services.request_cancel(task.id, task.owner_id)
        except services.CancelRefused as exc:
            return Response(
                {"detail": str(exc), "code": "task_finished"}, status=status.HTTP_409_CONFLICT
            )
        return Response(TaskSerializer(task).data, status=status.HTTP_202_ACCEPTED)


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"


def json_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, with a machine-readable ``code`` on every error body."""
    if isinstance(exc, RequestDataTooBig):  # reading request.body: Django's HTML 400 otherwise
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = RequestTooLarge(f"The request body is larger than {limit} bytes.")
    response = exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" in response.data:
        code = getattr(response.data["detail"], "code", None)
        if code is not None:
            response.data["code"] = code
    return response


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)


def json_server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"detail": "Server error.", "code": "server_error"}, status=500)
