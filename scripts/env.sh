# Sourced by the other scripts: where the project's virtualenv lives.
# PostgreSQL runs `pgproof wal-push` as the postgres OS user, so the venv (and, for an
# editable install, the checkout) must be readable by that user: a checkout it can read gets
# .venv inside it (editable); otherwise the venv goes under /var/tmp with a regular install.
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${PGPROOF_VENV:-}" ]; then
  venv="$PGPROOF_VENV"; editable=1
elif [ "$(id -u)" != 0 ] || runuser -u postgres -- test -r "$repo_root/pyproject.toml" 2>/dev/null; then
  venv="$repo_root/.venv"; editable=1
else
  venv="/var/tmp/pgproof-venv-$(printf '%s' "$repo_root" | sha256sum | cut -c1-12)"; editable=0
fi
export PGPROOF_PG_CACHE="${PGPROOF_PG_CACHE:-/var/cache/pgproof/postgresql}"
barman_venv="$venv-barman"  # barman-cloud's own venv (scripts/setup)
export PGPROOF_BARMAN_BIN="${PGPROOF_BARMAN_BIN:-$barman_venv/bin}"
export PGPROOF_PGBACKREST_CACHE="${PGPROOF_PGBACKREST_CACHE:-/var/cache/pgproof/pgbackrest}"
