from django.apps import AppConfig


class HeartbeatConfig(AppConfig):
    name = "heartbeat"
    default_auto_field = "django.db.models.BigAutoField"
