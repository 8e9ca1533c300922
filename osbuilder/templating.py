"""Jinja2 templates shipped in osbuilder/templates/ (units, Dockerfiles, configuration files)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from osbuilder.paths import TEMPLATES_DIR

if TYPE_CHECKING:
    import jinja2


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2  # imported when a template is rendered: a cache hit renders none

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,  # a missing variable is a bug, not an empty string
        keep_trailing_newline=True,
        autoescape=False,  # nothing here is HTML
    )


def render(name: str, **variables: Any) -> str:
    """Render templates/<name> (e.g. "rootfs/kata-agent.service.j2")."""
    return _environment().get_template(name).render(**variables)
