"""``verifier:`` of the config, whole: built by ``pgproof.config``, read by the verifier
(import-light: the config module is read by every command, ``wal-push`` included)."""

from __future__ import annotations

from dataclasses import dataclass

from pgproof.verifier.containersettings import ContainerSettings

DEFAULT_SANDBOX_USER = "pgproof-sandbox"


@dataclass(frozen=True)
class VerifierSettings:
    sandbox: str = "process"  # or "container"
    jobs: int = 2  # pg_restore -j and pg_amcheck -j
    rto_seconds: float = 3600.0
    container: ContainerSettings = ContainerSettings()
    workdir: str | None = None  # where sandboxes live (default: $TMPDIR/pgproof-sandboxes)
    heapallindexed: bool = False
    heartbeat_slack_seconds: float = 5.0
    timeout_seconds: float = 6 * 3600
    # a restore test's lease in the repository (backups.leases): retention elsewhere keeps
    # the backup under test until it ends or the lease, renewed every third of it, runs out
    lease_seconds: float = 300.0
    # the OS user process sandboxes run as (when pgproof is root); see verifier.isolation
    sandbox_user: str = DEFAULT_SANDBOX_USER
    share_sandbox_user: bool = False  # accept a sandbox user that owns a local cluster
    memory_mb: int = 256  # the process sandbox's server: shared_buffers etc. follow
    address_space_mb: int = 4096  # per server process of the process sandbox (prlimit --as)
    # signed records (verifier.signing): this host's private key; the public keys whose
    # signatures report --verify-chain accepts
    signing_key_file: str | None = None
    trusted_keys: tuple[str, ...] = ()
    unsigned_before: str | None = None  # ISO time: older records may be unsigned

    def container_for(self, image: str | None) -> ContainerSettings | None:
        """The container sandbox's settings with a target's own image, or None for the
        process sandbox."""
        return self.container.with_image(image) if self.sandbox == "container" else None
