"""One version string: the installed metadata, sam_decoding.__version__ and the changelog agree."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import sam_decoding

CHANGELOG = Path(__file__).resolve().parent.parent / "CHANGELOG.md"


def newest_changelog_entry() -> tuple[str, str]:
    """``(version, text)`` of the first ``## [VERSION]`` section of CHANGELOG.md."""
    assert CHANGELOG.is_file(), f"{CHANGELOG} is missing (the tests expect CHANGELOG.md beside tests/)"
    sections = [section for section in re.split(r"^## ", CHANGELOG.read_text(encoding="utf-8"), flags=re.MULTILINE)[1:] if not section.startswith("[Unreleased]")]
    assert sections, "CHANGELOG.md has no '## [VERSION]' section"
    match = re.match(r"\[([^\]]+)\]", sections[0])
    assert match, f"the newest CHANGELOG.md section does not start with [VERSION]: {sections[0][:40]!r}"
    return match.group(1), sections[0]


def test_version_is_the_installed_metadata_version() -> None:
    assert sam_decoding.__version__ == importlib.metadata.version("sam-decoding")


def test_newest_changelog_entry_is_this_version() -> None:
    version, _ = newest_changelog_entry()
    assert version == sam_decoding.__version__


def test_changelog_names_the_file_format_version_written() -> None:
    _, text = newest_changelog_entry()
    assert f"file format version {sam_decoding.FORMAT_VERSION}" in text.lower()
