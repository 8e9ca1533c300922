"""The default agent: `make -C agent O=... VERSION=...`, cached by the sources' digest."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbuilder.agent_build import reference_agent
from osbuilder.context import Context
from osbuilder.errors import UsageError
from osbuilder.paths import DEFAULT_DISTROS_DIR, DEFAULT_VERSIONS

MAKEFILE = """\
O ?= .
$(O)/kata-agent: agent.c
\techo built >> {log}
\tcp {agent} $(O)/kata-agent
\techo $(VERSION) > {version}
"""


@pytest.fixture
def context(tmp_path: Path) -> Context:
    return Context(versions_path=DEFAULT_VERSIONS, distros_dir=DEFAULT_DISTROS_DIR, cache_dir=tmp_path / "cache")


def default_agent(context: Context, sources: Path) -> Path:
    return reference_agent(context.versions.agent_version, context.cache, sources)


def _sources(tmp_path: Path, agent: Path) -> Path:
    sources = tmp_path / "agent"
    sources.mkdir()
    (sources / "agent.c").write_text("int main(void) { return 0; }\n")
    (sources / "Makefile").write_text(MAKEFILE.format(log=tmp_path / "builds.log", agent=agent,
                                                      version=tmp_path / "version"))
    return sources


def test_missing_sources_ask_for_an_agent(context: Context, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        default_agent(context, tmp_path / "agent")
    assert "--agent" in caught.value.fix and caught.value.exit_code == 2


def test_built_once_then_cached(context: Context, tmp_path: Path, test_agent: Path) -> None:
    sources = _sources(tmp_path, test_agent)
    first = default_agent(context, sources)
    assert first.read_bytes() == test_agent.read_bytes()
    assert (tmp_path / "version").read_text().strip() == context.versions.agent_version
    assert default_agent(context, sources) == first
    assert (tmp_path / "builds.log").read_text() == "built\n"
    assert sorted(path.name for path in first.parent.iterdir()) == [".osbuilder-cache.json", "kata-agent"]
    (sources / "agent.c").write_text("int main(void) { return 1; }\n")
    assert default_agent(context, sources) != first
    assert (tmp_path / "builds.log").read_text() == "built\nbuilt\n"
