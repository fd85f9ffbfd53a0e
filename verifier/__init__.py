"""How backups are proven: throwaway PostgreSQL sandboxes, restores, checks, result records.

Errors: every error raised on purpose derives from :class:`verifier.errors.VerifierError`.
"""

from pgproof.verifier.errors import VerifierError

__all__ = ["VerifierError"]
