# pgproof on the official PostgreSQL image: pg_dump/pg_basebackup/pg_verifybackup and a server
# of the same major for restore tests (process sandbox), plus pgproof in a venv the postgres
# user can run (archive_command). PG_MAJOR must be >= the sources' major.
ARG PG_MAJOR=17
FROM postgres:${PG_MAJOR}-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv zstd ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /opt/pgproof/src/
COPY backups /opt/pgproof/src/backups
COPY verifier /opt/pgproof/src/verifier
COPY exporters /opt/pgproof/src/exporters
COPY alerts /opt/pgproof/src/alerts
COPY pgproof /opt/pgproof/src/pgproof
RUN python3 -m venv /opt/pgproof/venv \
 && /opt/pgproof/venv/bin/pip install --no-cache-dir /opt/pgproof/src \
 && ln -s /opt/pgproof/venv/bin/pgproof /usr/local/bin/pgproof \
 && install -d -o postgres -g postgres /var/lib/pgproof /var/lib/pgproof/repo /run/pgproof
ENV PGPROOF_CONFIG=/etc/pgproof/pgproof.yaml
