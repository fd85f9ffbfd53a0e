"""How results become Prometheus metrics: an incremental index of each repository refreshed
in the background, scrape-time collectors over it and the sources' archiver status, and the
HTTP endpoint (basic auth and TLS from an exporter-toolkit web-config file).

Errors: every error raised on purpose derives from :class:`exporters.errors.ExporterError`.
"""
