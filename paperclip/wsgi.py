"""The WSGI application gunicorn serves.

API requests skip the middleware that only pages use (static files, messages, the admin
login's lockout): on the heartbeat protocol's small reads each layer was a measurable share of
the CPU. Everything else, from security headers to sessions and CSRF for the board's browser,
is the same for both.
"""

import os

import django
from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.utils.module_loading import import_string

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paperclip.settings")

API_PATH_PREFIX = "/api/"
PAGE_ONLY_MIDDLEWARE = frozenset(
    {
        "whitenoise.middleware.WhiteNoiseMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "axes.middleware.AxesMiddleware",
    }
)


class PaperclipWSGIHandler(WSGIHandler):
    def load_middleware(self, is_async=False):
        super().load_middleware(is_async)
        page_chain = self._middleware_chain
        # Django's own order, less the page-only layers. The view-level hooks (process_view,
        # process_exception) that Django collected stay shared: the page-only layers have none,
        # and the others keep no state between their hooks.
        api_chain = convert_exception_to_response(self._get_response)
        for path in reversed(settings.MIDDLEWARE):
            if path in PAGE_ONLY_MIDDLEWARE:
                continue
            try:
                api_chain = convert_exception_to_response(import_string(path)(api_chain))
            except MiddlewareNotUsed:
                continue

        def middleware_chain(request):
            if request.path_info.startswith(API_PATH_PREFIX):
                return api_chain(request)
            return page_chain(request)

        self._middleware_chain = middleware_chain


def get_wsgi_application() -> PaperclipWSGIHandler:
    django.setup(set_prefix=False)
    return PaperclipWSGIHandler()


application = get_wsgi_application()
