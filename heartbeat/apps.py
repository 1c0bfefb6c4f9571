from django.apps import AppConfig


class HeartbeatConfig(AppConfig):
    name = "heartbeat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Connects the receivers for events of the issues and paperclip apps.
        from heartbeat import receivers  # noqa: F401
