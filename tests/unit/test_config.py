from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgproof import config
from pgproof.backups.settings import S3RepoSettings
from pgproof.cli import main
from pgproof.configfields import ConfigError, parse_duration


def base() -> dict[str, Any]:
    return {
        "repositories": [
            {"name": "local", "type": "filesystem", "path": "/var/lib/pgproof/repo"},
            {"name": "offsite", "type": "s3", "bucket": "b", "sse": "AES256"},
        ],
        "targets": [
            {
                "name": "main",
                "conninfo": "host=/tmp dbname=app",
                "repositories": ["local", "offsite"],
            }
        ],
    }


def test_valid_config_is_typed_and_frozen() -> None:
    cfg = config.parse(base())
    target = cfg.target(None)
    assert target.name == "main"
    assert [r.name for r in target.settings.repositories] == ["local", "offsite"]
    assert target.settings.max_backup_age_seconds == 26 * 3600
    with pytest.raises(AttributeError):
        target.settings.name = "x"  # type: ignore[misc]


def mutate(path: str, value: Any) -> dict[str, Any]:
    doc = base()
    node: Any = doc
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    node[keys[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("targets.0.bogus", 1, "targets[0].bogus"),
        ("targets.0.retention", {"full_backups": 0}, "targets[0].retention.full_backups"),
        ("targets.0.retention", {"full_backups": "7"}, "targets[0].retention.full_backups"),
        ("targets.0.repositories", ["nowhere"], "targets[0].repositories[0]"),
        ("targets.0.conninfo", "host=x password=secret", "targets[0].conninfo"),
        ("targets.0.name", "../escape", "targets[0].name"),
        ("targets.0.max_backup_age", "soon", "targets[0].max_backup_age"),
        ("targets.0.schedule", {"logical": "sometimes"}, "targets[0].schedule.logical"),
        ("targets.0.physical", {"compression": "gzip"}, "targets[0].physical.compression"),
        ("targets.0.logical", {"compression": "zstd:99"}, "targets[0].logical.compression"),
        ("repositories.1.sse", "rot13", "repositories[1].sse"),
        ("repositories.0.path", "relative/path", "repositories[0].path"),
        ("verifier", {"sandbox": "vm"}, "verifier.sandbox"),
        ("verifier", {"image": "postgres:{version}"}, "verifier.image"),
        ("verifier", {"image": "my image:15"}, "verifier.image"),
        ("verifier", {"container": {"pull": "always-maybe"}}, "verifier.container.pull"),
        (
            "verifier",
            {"container": {"engine": "/var/run/docker.sock"}},
            "verifier.container.engine",
        ),
        ("verifier", {"container": {"memory_mb": 16}}, "verifier.container.memory_mb"),
        ("verifier", {"container": {"cpus": 0}}, "verifier.container.cpus"),
        ("verifier", {"container": {"pids": "many"}}, "verifier.container.pids"),
        ("verifier", {"container": {"api_timeout": "soon"}}, "verifier.container.api_timeout"),
        ("verifier", {"container": {"network": "host"}}, "verifier.container.network"),
        ("verifier", {"sandbox_user": "root"}, "verifier.sandbox_user"),
        ("verifier", {"sandbox_user": "a user; rm"}, "verifier.sandbox_user"),
        ("verifier", {"share_sandbox_user": "maybe"}, "verifier.share_sandbox_user"),
        ("verifier", {"memory_mb": 8}, "verifier.memory_mb"),
        ("verifier", {"address_space_mb": "lots"}, "verifier.address_space_mb"),
        ("verifier", {"lease": "10s"}, "verifier.lease"),
        ("verifier", {"lease": 0}, "verifier.lease"),
        ("verifier", {"lease": "forever"}, "verifier.lease"),
        ("targets.0.image", "postgres:{major", "targets[0].image"),
        ("http", {"listen": "9847"}, "http.listen"),
        ("unknown_top", True, "unknown_top"),
    ],
)
def test_bad_values_name_the_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse(mutate(path, value))
    assert info.value.field == field
    assert str(info.value).startswith(field + ":")


def test_container_sandbox_settings() -> None:
    doc = mutate(
        "verifier",
        {
            "sandbox": "container",
            "image": "registry.example.com/pg:{major}-postgis",
            "container": {
                "engine": "unix:///run/podman/podman.sock",
                "pull": "never",
                "memory_mb": 2048,
                "cpus": 1.5,
                "pids": 300,
                "api_timeout": "10s",
            },
        },
    )
    doc["targets"][0]["image"] = "postgres:{major}-bookworm"
    cfg = config.parse(doc)
    c = cfg.verifier.container
    assert (c.engine, c.pull, c.memory_mb, c.cpus, c.pids, c.api_timeout) == (
        "unix:///run/podman/podman.sock",
        "never",
        2048,
        1.5,
        300,
        10.0,
    )
    assert c.image_for(17) == "registry.example.com/pg:17-postgis"
    target = cfg.target(None)
    assert c.with_image(target.image).image_for(15) == "postgres:15-bookworm"
    default = config.parse(base()).verifier
    assert default.sandbox == "process" and default.container.image_for(16) == "postgres:16"


def test_durations() -> None:
    assert parse_duration("26h", "f") == 93600
    assert parse_duration("15m", "f") == 900
    assert parse_duration(30, "f") == 30
    with pytest.raises(ConfigError):
        parse_duration("-1h", "f")


def write(tmp_path: Path, doc: object) -> str:
    path = tmp_path / "pgproof.yaml"
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return str(path)


def test_cli_exits_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, mutate("targets.0.retention", {"max_age_days": "long"}))
    assert main(["--config", path, "list"]) == 2
    err = capsys.readouterr().err
    assert "targets[0].retention.max_age_days" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_exits_2_on_missing_file_and_bad_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(tmp_path / "absent.yaml"), "check"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["--config", write(tmp_path, "targets: [\n"), "check"]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_cli_unknown_target_and_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, base())
    assert main(["--config", path, "list", "--target", "nope"]) == 2
    assert "--target" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--config", path, "backup", "incremental"])
    assert info.value.code == 2


def test_wal_push_starts_without_heavy_imports(tmp_path: Path) -> None:
    """archive_command runs once per segment: no psycopg or boto3 on a filesystem target."""
    doc = base()
    doc["repositories"] = doc["repositories"][:1]
    doc["targets"][0]["repositories"] = ["local"]
    path = write(tmp_path, doc)
    probe = (
        "import sys; from pgproof.cli import main; "
        f"rc = main(['--config', {path!r}, 'wal-push', '/nonexistent/000000010000000000000001']); "
        "print(rc, 'psycopg' in sys.modules, 'boto3' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "False", "False"]


def test_unopenable_repository_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = base()
    doc["repositories"][1].update(
        access_key_id_env="NO_SUCH_KEY", secret_access_key_env="NO_SECRET"
    )
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    assert main(["--config", write(tmp_path, doc), "check"]) == 1
    err = capsys.readouterr().err
    assert (
        err == "pgproof: check: repository 'offsite': environment variable NO_SUCH_KEY is not set\n"
    )


def test_help_lists_the_commands_a_user_runs_and_every_pitr_form(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pgproof.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    top = capsys.readouterr().out
    assert "SUPPRESS" not in top and "wal-push-worker" not in top and "verify" in top
    with pytest.raises(SystemExit):
        build_parser().parse_args(["verify", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "lsn:X/Y | xid:N | name:R" in text
    assert build_parser().parse_args(["wal-push-worker", "pg_wal"]).command == "wal-push-worker"


def test_signing_settings() -> None:
    doc = base()
    doc["verifier"] = {
        "signing_key_file": "/etc/pgproof/records.ed25519",
        "trusted_keys": ["/etc/pgproof/records.ed25519.pub", "/etc/pgproof/2025.pub"],
        "unsigned_before": "2026-12-01T01:00:00+01:00",
    }
    v = config.parse(doc).verifier
    assert v.signing_key_file == "/etc/pgproof/records.ed25519" and len(v.trusted_keys) == 2
    assert v.unsigned_before == "2026-12-01T00:00:00.000Z"
    for bad, message in (
        ({"signing_key_file": "records.key"}, "absolute"),
        ({"trusted_keys": ["k.pub"]}, "absolute"),
        ({"unsigned_before": "yesterday"}, "not an ISO time"),
        ({"unsigned_before": "2026-12-01T00:00:00"}, "time zone"),
    ):
        doc["verifier"] = bad
        with pytest.raises(ConfigError, match=message):
            config.parse(doc)


def test_object_lock_settings() -> None:
    doc = base()
    doc["repositories"][1]["object_lock"] = {"mode": "COMPLIANCE", "days": 35}
    offsite = next(r for r in config.parse(doc).repositories if r.name == "offsite")
    assert isinstance(offsite, S3RepoSettings)
    assert offsite.options.lock_mode == "COMPLIANCE" and offsite.options.lock_days == 35
    for bad, message in (
        ({"mode": "LEGAL", "days": 3}, "mode"),
        ({"mode": "GOVERNANCE"}, "days"),
        ({"mode": "GOVERNANCE", "days": 0}, "at least 1"),
    ):
        doc["repositories"][1]["object_lock"] = bad
        with pytest.raises(ConfigError, match=message):
            config.parse(doc)


def test_encryption_settings() -> None:
    doc = base()
    arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    doc["repositories"][0]["encryption"] = {
        "key_file": "/etc/pgproof/local.key",
        "previous": [{"key_env": "OLD_KEY"}, {"kms_key_id": arn}],
        "kms_endpoint_url": "https://kms.eu-west-1.amazonaws.com",
    }
    local = config.parse(doc).repositories[0]
    assert local.encryption is not None
    assert local.encryption.current.key_file == "/etc/pgproof/local.key"
    assert [p.describe() for p in local.encryption.previous] == [
        "key_env OLD_KEY",
        f"kms_key_id {arn}",
    ]
    for bad, message in (
        ({}, "exactly one of key_file, key_env or kms_key_id"),
        ({"key_file": "/k", "key_env": "K"}, "exactly one"),
        ({"key_file": "local.key"}, "absolute"),
        ({"kms_key_id": "alias/pgproof"}, "not a KMS key ARN"),
        ({"key_file": "/k", "kms_endpoint_url": "http://x"}, "for kms_key_id keys only"),
        ({"key_file": "/k", "previous": [{"key_file": "/a", "key_env": "B"}]}, r"previous\[0\]"),
        ({"key_file": "/k", "cipher": "aes"}, "unknown key"),
    ):
        doc["repositories"][0]["encryption"] = bad
        with pytest.raises(ConfigError, match=message):
            config.parse(doc)
