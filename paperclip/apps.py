from django.apps import AppConfig


class PaperclipConfig(AppConfig):
    name = "paperclip"
    default_auto_field = "django.db.models.BigAutoField"
