"""The pgproof command line as the foreign-source tests run it: one config, an environment
of secrets the module needs, ``verify`` returning its one record; and the heartbeat process
running while a fixture writes and backs up."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from pgproof.verifier.records import ResultRecord
from tests.support.fixtures import PGPROOF


class PgproofCli:
    """Mixed into a test module's fixture object, which has ``config``; ``secrets()`` is the
    environment every command gets (S3 keys, passphrases)."""

    config: Path

    def secrets(self) -> Mapping[str, str]:
        return {}

    def pgproof(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PGPROOF, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, **self.secrets(), **(env or {})},
        )

    def verify(
        self,
        target: str,
        *args: str,
        kind: str = "physical",
        env: Mapping[str, str] | None = None,
    ) -> ResultRecord:
        done = self.pgproof("verify", "--target", target, "--kind", kind, "--json", *args, env=env)
        assert done.stdout, done.stderr
        (record,) = json.loads(done.stdout)["results"]
        return ResultRecord.from_dict(record)


@contextlib.contextmanager
def heartbeat_running(
    config: Path, target: str, env: Mapping[str, str] | None = None, warmup: float = 1.5
) -> Iterator[None]:
    """``pgproof heartbeat`` for the block (beats before the backup: ``warmup`` seconds)."""
    beats = subprocess.Popen(
        [PGPROOF, "--config", str(config), "heartbeat", "--target", target],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    try:
        time.sleep(warmup)
        yield
    finally:
        beats.terminate()
        beats.wait(30)
