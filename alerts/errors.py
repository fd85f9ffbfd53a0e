"""The exception tree of the ``alerts`` package.

AlertError
 +-- DeliveryError     the SMTP server refused, timed out or could not be reached
 +-- StateError        the state file cannot be written
"""

from __future__ import annotations


class AlertError(Exception):
    """Root of every error raised on purpose by the alerts package."""


class DeliveryError(AlertError):
    pass


class StateError(AlertError):
    pass
