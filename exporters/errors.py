"""The exception tree of the ``exporters`` package.

ExporterError
 +-- WebConfigError      the web-config file (TLS, basic auth) is missing or wrong
 +-- ListenError         the HTTP endpoint cannot listen where configured
"""

from __future__ import annotations


class ExporterError(Exception):
    """Root of every error raised on purpose by the exporters package."""


class WebConfigError(ExporterError):
    pass


class ListenError(ExporterError):
    pass
