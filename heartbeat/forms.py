"""Admin forms of the heartbeat app."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from heartbeat.adapters.base import ADAPTER_SECRET_MAPS, adapter_config_unmasked
from heartbeat.run_log import REDACTED


class AdapterConfigField(forms.JSONField):
    """adapter_config in the admin: the values of its env and headers are credentials, shown
    to nobody (the page may be on a shared screen, and is cached by browsers); a masked value
    left as it is keeps the stored one, a typed value replaces it."""

    stored: Any = None

    def prepare_value(self, value):
        if isinstance(value, dict):
            value = self._masked(value)
        return super().prepare_value(value)

    def _masked(self, config: dict) -> dict:
        # Only stored values are masked: a value just typed into a form that failed validation
        # is shown back, so it is not silently replaced by the stored one on the next submit.
        stored = self.stored if isinstance(self.stored, dict) else {}
        unchanged = {
            key: {
                name
                for name, value in (config.get(key) or {}).items()
                if isinstance(stored.get(key), dict) and stored[key].get(name) == value
            }
            for key in ADAPTER_SECRET_MAPS
            if isinstance(config.get(key), dict)
        }
        masked = dict(config)
        for key, names in unchanged.items():
            masked[key] = {
                name: REDACTED if name in names else value for name, value in config[key].items()
            }
        return masked

    def clean(self, value):
        config = adapter_config_unmasked(super().clean(value), self.stored)
        for key in ADAPTER_SECRET_MAPS:
            values = config.get(key) if isinstance(config, dict) else None
            if isinstance(values, dict) and REDACTED in values.values():
                names = ", ".join(name for name, item in values.items() if item == REDACTED)
                raise forms.ValidationError(
                    f"{key}: type a value for {names} ({REDACTED} only keeps a stored value)"
                )
        return config

    def has_changed(self, initial, data):
        try:
            config = self.clean(data)
        except forms.ValidationError:
            return True
        return json.dumps(initial, sort_keys=True) != json.dumps(config, sort_keys=True)


class AgentAdminForm(forms.ModelForm):
    adapter_config = AdapterConfigField(required=False, initial=dict)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["adapter_config"].stored = self.instance.adapter_config
