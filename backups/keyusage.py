"""Which master keys encrypt a target's objects (``check`` of an encrypted repository).

``check`` reads every backup file, manifest and WAL copy (or remembers a WAL copy's key from
the read that found it intact); here the small documents (records, job status) are read as
well, the objects are counted per master key id, and the repository's key registry is
rewritten with those counts once every object was accounted for: a key no object needs any
more leaves the registry and may then leave the configuration. Keys this host lacks are
named as problems (``key-unavailable``); a document that does not authenticate as damage.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pgproof.backups import layout, walverify
from pgproof.backups.errors import BackupError, DecryptFailed
from pgproof.backups.keyregistry import KeyRegistry, RegisteredKey
from pgproof.backups.storage.base import Repository
from pgproof.backups.storage.encrypted import EncryptedRepository


@dataclass
class KeyUsage:
    summary: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _read_documents(repo: EncryptedRepository, target: str, usage: KeyUsage) -> bool:
    """Read the target's records and job documents; False when one could not be read."""
    whole = True
    for prefix in (layout.results_prefix(target), layout.jobs_prefix(target)):
        for info in repo.listing(prefix):
            if layout.is_key_registry(info.key):
                continue
            try:
                repo.read_bytes(info.key)
            except DecryptFailed as exc:
                usage.problems.append(f"{repo.name}: {exc}")
            except BackupError as exc:
                usage.problems.append(f"{repo.name}: cannot read {info.key}: {exc}")
                whole = False
    return whole


def check_keys(repo: Repository, target: str, verify_data: bool, read_all: bool) -> KeyUsage:
    """``read_all``: every backup file and WAL copy was read or remembered by this check."""
    usage = KeyUsage()
    if not isinstance(repo, EncryptedRepository):
        return usage
    try:
        whole = verify_data and read_all and _read_documents(repo, target, usage)
        of_target = {k: v for k, v in repo.key_ids.items() if k.startswith(target + "/")}
        state = walverify.read_state(repo, target)
        if state is not None:
            remembered = walverify.key_ids_of(state.copies)
            whole = whole and len(remembered) == len(state.copies)
            of_target.update({k: v for k, v in remembered.items() if k not in of_target})
        counts = Counter(of_target.values())
        examples = {kid: key for key, kid in sorted(of_target.items(), reverse=True)}
        registered = repo.registered(target).keys
        usage.summary = {
            "current_key": repo.ring.current,
            "configured_keys": sorted(repo.ring.keys),
            "objects_per_key": dict(sorted(counts.items())),
            "counted": "every object" if whole else "the objects read by this check",
        }
        for kid in sorted(set(registered) - set(repo.ring.keys)):
            usage.problems.append(
                f"{repo.name}: key-unavailable: master key {kid} encrypts objects of "
                f"{target!r} (e.g. {registered[kid].example}) and is not in this "
                "repository's encryption settings"
            )
        if whole:  # exact counts: keys no object uses leave the registry
            found = {k: RegisteredKey(n, examples[k]) for k, n in counts.items()}
            found.setdefault(repo.ring.current, RegisteredKey(0, ""))
            repo.write_registry(target, KeyRegistry(found))
    except BackupError as exc:
        usage.problems.append(f"{repo.name}: cannot count objects per master key: {exc}")
    return usage
