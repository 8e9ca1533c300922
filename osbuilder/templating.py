"""Jinja2 templates shipped with the package (systemd units, the builder Dockerfile, the runtime
configurations): one environment per template directory, strict about undefined variables."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2


@functools.cache
def _environment(directory: Path, filters: tuple[tuple[str, Callable[[Any], str]], ...]) -> jinja2.Environment:
    import jinja2  # imported when a template is rendered: a cache hit renders none

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,  # a missing variable is a bug, not an empty string
        keep_trailing_newline=True,
        autoescape=False,  # nothing here is HTML
    )
    environment.filters.update(dict(filters))
    return environment


def render(directory: Path, name: str, filters: tuple[tuple[str, Callable[[Any], str]], ...] = (),
           **variables: Any) -> str:
    """Render directory/name with the given variables (and extra filters, e.g. toml quoting)."""
    return _environment(directory, filters).get_template(name).render(**variables)
