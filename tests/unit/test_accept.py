"""A scraper's Accept header: what prometheus_client could not read becomes the text format."""

from __future__ import annotations

import pytest

from pgproof.exporters.scrape import usable_accept

OM = "application/openmetrics-text"


@pytest.mark.parametrize(
    ("accept", "kept"),
    [
        ("", True),
        ("text/plain;version=0.0.4;q=0.5,*/*;q=0.1", True),
        (f"{OM}; version=1.0.0; charset=utf-8", True),
        (f'{OM}; version="0.0.1",text/plain;version=0.0.4', True),
        (f"{OM}; version=abc", False),
        (f"{OM}; version=", False),
        (f"{OM}; version=1.x", False),
    ],
)
def test_versions_that_are_not_dotted_numbers_fall_back(accept: str, kept: bool) -> None:
    assert usable_accept(accept) == (accept if kept else "")
