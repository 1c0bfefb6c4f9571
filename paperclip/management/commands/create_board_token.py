import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from paperclip.services import board_token_create


class Command(BaseCommand):
    help = (
        "Create a board API token (Authorization: Bearer ...) for a board user and print it. "
        "It is shown this once; only its hash is kept. It works until revoked in the admin."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--user",
            default=os.environ.get("PAPERCLIP_ADMIN_USER", "admin"),
            help="the board user's username (default: the board login `start` made)",
        )
        parser.add_argument("--name", default="manage.py", help="a label for the token")

    def handle(self, *args, **options):
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(
                f"no user {options['user']!r}; pass --user with an existing username"
            )
        token, secret = board_token_create(user_id=user.pk, name=options["name"])
        self.stderr.write(
            f"Board token {token.name!r} for {user.username!r} (shown once; store it now):"
        )
        self.stdout.write(secret)
