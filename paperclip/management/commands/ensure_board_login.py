import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Make sure an instance-admin board login exists and print who logs in and where the "
        "password is. The username and password come from PAPERCLIP_ADMIN_USER / "
        "PAPERCLIP_ADMIN_PASSWORD, or a password is generated once and kept in "
        "PAPERCLIP_HOME/board-login.txt (mode 0600)."
    )

    def handle(self, *args, **options):
        username = os.environ.get("PAPERCLIP_ADMIN_USER", "admin")
        password = os.environ.get("PAPERCLIP_ADMIN_PASSWORD")
        secret_file = settings.PAPERCLIP_HOME / "board-login.txt"
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if password:
            where = "password from PAPERCLIP_ADMIN_PASSWORD"
        elif user is None or secret_file.exists():
            where = f"password in {secret_file}"
        else:
            where = "password unchanged (set PAPERCLIP_ADMIN_PASSWORD to reset it)"
        if user is None:
            if not password:
                password = secrets.token_urlsafe(12)
                settings.PAPERCLIP_HOME.mkdir(parents=True, exist_ok=True)
                secret_file.write_text(f"{username}\n{password}\n")
                secret_file.chmod(0o600)
            user_model.objects.create_superuser(username=username, email="", password=password)
        elif password:
            user.set_password(password)
            user.save(update_fields=["password"])
        self.stdout.write(f"board login: user {username!r}, {where}")
