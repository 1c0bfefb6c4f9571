from django.apps import AppConfig


class HeartbeatConfig(AppConfig):
    name = "heartbeat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Connects the receivers for events of the issues and paperclip apps.
        from heartbeat import receivers  # noqa: F401
        from heartbeat.authentication import agent_credential_authenticate
        from heartbeat.shim.run_shim import redact_text
        from paperclip.authentication import agent_credential_resolver_register
        from paperclip.services import activity_text_redactor_register

        # Activity details get the run log's credential patterns too.
        activity_text_redactor_register(redact_text)
        # Agents' API keys and run credentials are this app's tables.
        agent_credential_resolver_register(agent_credential_authenticate)

        self.connect_cluster_startup()

    def connect_cluster_startup(self):
        # Start-up recovery whenever a django-q2 worker starts (`python3 -m paperclip start`
        # runs qcluster): schedules, the reap with no stale threshold, resume, reconcile.
        from django_q.signals import post_spawn

        from heartbeat.schedules import on_worker_spawn

        post_spawn.connect(on_worker_spawn, dispatch_uid="heartbeat.cluster_startup")
