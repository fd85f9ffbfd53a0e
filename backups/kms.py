"""AWS KMS as a master key for client-side encryption (issue 15): each object's data key is
wrapped by KMS ``Encrypt`` under the key's ARN with the object key as encryption context, so
a wrapped key unwraps only for the object it was made for. boto3 is imported here only."""

from __future__ import annotations

import re
from typing import Any

from pgproof.backups.crypto import CryptoError

ARN = re.compile(r"^arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):\d{12}:key/[A-Za-z0-9-]+$")

# KMS's answers that say the wrapped key itself is wrong (evidence of a changed object);
# every other refusal (key deleted, disabled, pending deletion, access denied, throttled,
# unreachable) means the object may be fine and this host cannot tell: key-unavailable
_DAMAGE = ("InvalidCiphertextException", "IncorrectKeyException")


def region_of(arn: str) -> str:
    match = ARN.match(arn)
    if match is None:
        raise ValueError(f"{arn!r} is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)")
    return match.group("region")


class KmsKey:
    def __init__(
        self,
        arn: str,
        endpoint_url: str | None = None,
        credentials: tuple[str, str] | None = None,
        client: Any = None,
    ):
        """``credentials``: an access key id and secret (the S3 repository's own), else
        boto3's default chain (environment, profile, instance role)."""
        self.key_id = arn
        if client is None:
            import boto3
            from botocore.config import Config

            key, secret = credentials or (None, None)
            client = boto3.client(
                "kms",
                region_name=region_of(arn),
                endpoint_url=endpoint_url,
                aws_access_key_id=key,
                aws_secret_access_key=secret,
                config=Config(
                    retries={"max_attempts": 4, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=30,
                ),
            )
        self._client = client

    def __repr__(self) -> str:
        return f"KmsKey({self.key_id})"

    def _failure(self, exc: Exception, object_key: str, doing: str) -> CryptoError:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            text = str(exc.response.get("Error", {}).get("Message", "")) or code
            if code not in _DAMAGE:
                return CryptoError(
                    "key-unavailable",
                    f"{object_key}: KMS key {self.key_id} cannot {doing} it ({code}: {text})",
                )
            return CryptoError(
                "decrypt-failed",
                f"{object_key}: KMS key {self.key_id} does not unwrap its data key ({code}: "
                "the object's header was changed, or it was renamed)",
            )
        return CryptoError(
            "key-unavailable",
            f"{object_key}: KMS does not answer for key {self.key_id} "
            f"({type(exc).__name__}: {exc})",
        )

    def _call(self, action: str, object_key: str, doing: str, **params: bytes) -> bytes:
        """KMS ``action`` for one object's data key (the object key as encryption context);
        ``params`` are the call's one bytes argument and the answer's field is returned."""
        from botocore.exceptions import BotoCoreError, ClientError

        wanted = "CiphertextBlob" if action == "encrypt" else "Plaintext"
        try:
            answer = getattr(self._client, action)(
                KeyId=self.key_id, EncryptionContext={"pgproof-object": object_key}, **params
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._failure(exc, object_key, doing) from None
        return bytes(answer[wanted])

    def wrap(self, object_key: str, data_key: bytes) -> bytes:
        return self._call("encrypt", object_key, "wrap the data key of", Plaintext=data_key)

    def unwrap(self, object_key: str, wrapped: bytes) -> bytes:
        return self._call("decrypt", object_key, "unwrap the data key of", CiphertextBlob=wrapped)
