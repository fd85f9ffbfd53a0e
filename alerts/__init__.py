"""How people are told: alert conditions over the exporter's target status, email
notifications (aiosmtplib + jinja2 templates) with de-duplication, repeats, resolve notices
and state kept across restarts; and Prometheus alerting rules (``alerts/prometheus``) for
Alertmanager, with promtool unit tests.

Errors: every error raised on purpose derives from :class:`alerts.errors.AlertError`.
"""
