from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Realtime"

    def ready(self) -> None:
        from streaming import conf  # noqa: F401  (connects the setting_changed receiver)
