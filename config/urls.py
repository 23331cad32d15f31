from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path
from rest_framework_simplejwt.views import TokenRefreshView

from realtime import views as realtime_views

handler404 = "tasks.views.json_not_found"
handler500 = "tasks.views.json_server_error"

urlpatterns = [
    path("", realtime_views.index, name="index"),
    path("admin/", admin.site.urls),
    path("api/v1/auth/token/", realtime_views.TokenView.as_view(), name="token_obtain_pair"),
    path("api/v1/auth/token/refresh/", TokenRefreshView.as_view(), name="token_refresh"),
    path("api/v1/auth/cookie/", realtime_views.StreamCookieView.as_view(), name="stream_cookie"),
    path("api/v1/", include("tasks.urls")),
    path("metrics", realtime_views.metrics_view, name="metrics"),
    path("healthz", realtime_views.healthz, name="healthz"),
    path("readyz", realtime_views.readyz, name="readyz"),
]

if settings.DEBUG:
    # Production serves /static/ from the proxy (docs/deployment.md); `make run` from here.
    urlpatterns += staticfiles_urlpatterns()
