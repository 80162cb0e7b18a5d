"""The JSON file as the settings' lowest-priority source.

Why a context variable: pydantic-settings builds its sources from the class, not the call, so
the file parsed for one load is handed to the source through the context of that load.
"""

from __future__ import annotations

import contextvars
from typing import Any

from pydantic_settings import PydanticBaseSettingsSource

current_file: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("current_file")


class _FileSource(PydanticBaseSettingsSource):
    """Lowest-priority source: the already-parsed JSON file."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(current_file.get({}))


def sources(settings_cls: Any, init_settings: Any, env_settings: Any) -> tuple[Any, ...]:
    return (init_settings, env_settings, _FileSource(settings_cls))
