"""``keys generate``: a record-signing key pair (Ed25519, ``verifier.signing``) or a master
key for client-side encryption (32 random bytes, base64). Written 0600, never over an
existing file; the key itself is never printed."""

from __future__ import annotations

import argparse
import base64
import os
import secrets
from pathlib import Path

from pgproof.output import EXIT_FAILED, EXIT_OK, err, out_json


def write_master(out: Path) -> Path:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    return out


def cmd_keys(args: argparse.Namespace) -> int:
    from pgproof.verifier import signing

    out = Path(args.out)
    try:
        if args.type == "signing":
            written = list(signing.generate(out))
        else:
            written = [write_master(out)]
    except FileExistsError:
        err(f"keys generate: {out} exists: pgproof never overwrites a key")
        return EXIT_FAILED
    except (signing.SigningKeyError, OSError) as exc:
        err(f"keys generate: {exc}")
        return EXIT_FAILED
    doc: dict[str, object] = {"type": args.type, "files": [str(p) for p in written]}
    if args.type == "signing":
        doc["key_id"] = signing.key_id(signing.load_private(str(written[0])).public_key())
    if args.json:
        out_json(doc)
    else:
        for path in written:
            print(path)
        if "key_id" in doc:
            print(f"key id {doc['key_id']}: put {written[1]} in verifier.trusted_keys")
    return EXIT_OK
