"""HTTP endpoints around the stream: the EventSource cookie, metrics, health, demo page."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt.tokens import AccessToken
from rest_framework_simplejwt.views import TokenObtainPairView

from realtime import lifecycle
from streaming import conf
from tasks.authentication import LoggedJWTAuthentication

STREAM_PATH = "/api/v1/events/"


class UsernameRateThrottle(SimpleRateThrottle):
    """Password guesses per username (rate ``login``), wherever they come from: the
    anonymous throttle counts per client address, and a botnet has many."""

    scope = "login"

    def get_rate(self) -> str | None:
        # settings.py always sets the rate; a test that replaces the table disables it.
        return self.THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request: Request, view: object) -> str | None:
        data = request.data if isinstance(request.data, dict) else {}
        username = data.get("username")
        if not isinstance(username, str) or not username.strip():
            return None
        ident = hashlib.sha256(username.strip().lower().encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}


class TokenView(TokenObtainPairView):
    """``POST /api/v1/auth/token/``: simplejwt's login, throttled per address and per
    username (TASKSTREAM_LOGIN_RATE)."""

    throttle_classes = [AnonRateThrottle, UserRateThrottle, UsernameRateThrottle]


class StreamCookieView(APIView):
    """Put the caller's access token in an HttpOnly cookie that only the stream reads.

    EventSource cannot send an Authorization header; a cookie it sends by itself, also on
    its automatic reconnects. The cookie lives no longer than the token inside it.
    """

    authentication_classes = [LoggedJWTAuthentication]

    def post(self, request: Request) -> Response:
        token = request.auth
        assert isinstance(token, AccessToken)  # JWTAuthentication + IsAuthenticated ran
        max_age = max(0, int(token["exp"] - time.time()))
        response = Response({"expires_in": max_age}, status=200)
        settings = conf.get()
        response.set_cookie(
            settings.AUTH_COOKIE,
            str(token),
            max_age=max_age,
            path=STREAM_PATH,
            secure=settings.AUTH_COOKIE_SECURE,
            httponly=True,
            samesite="Strict",
        )
        return response

    def delete(self, request: Request) -> Response:
        response = Response(status=204)
        response.delete_cookie(conf.get().AUTH_COOKIE, path=STREAM_PATH, samesite="Strict")
        return response


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics, for the networks in TASKSTREAM_METRICS_ALLOW (loopback by
    default) or a bearer of TASKSTREAM_METRICS_TOKEN; 403 for anyone else."""
    if not _may_read_metrics(request):
        return HttpResponse("forbidden", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


def _may_read_metrics(request: HttpRequest) -> bool:
    settings = conf.get()
    if settings.METRICS_TOKEN:
        expected = f"Bearer {settings.METRICS_TOKEN}".encode()
        given = request.headers.get("Authorization", "").encode()
        if hmac.compare_digest(given, expected):
            return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net) for net in settings.METRICS_ALLOW)


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


def readyz(request: HttpRequest) -> HttpResponse:
    """Readiness: fails while the node drains, so the load balancer sends streams elsewhere."""
    if lifecycle.draining.is_set():
        return HttpResponse("draining", status=503, content_type="text/plain")
    return HttpResponse("ready", content_type="text/plain")


def index(request: HttpRequest) -> HttpResponse:
    return render(request, "realtime/index.html")
