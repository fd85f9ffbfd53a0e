"""False-alarm soak: repeated restore tests of healthy backups must all pass.

Usage (as root, after scripts/setup):
    .venv/bin/python -m bench.soak_false_alarms [--tests 50] [--major 15] [--every 5]

A source of the given major gets the rich-schema corpus (tests/corpus/rich_schema.sql) and
then a light write load for the whole run (the heartbeat every second, a writer inserting
and updating in two databases every 0.2 s). Every --every tests a new logical and physical
backup is taken; the tests alternate: logical, physical --pitr random. Nothing here is
broken, so every verdict must be "passed"; the run prints failures/N (target: 0 of 50) and
the cause of each one that was not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
from collections import Counter

from tests.support.corpus import load_rich_schema
from tests.support.fixtures import PGPROOF, Setup, destroy_setup, make_setup


def writer(setup: Setup, stop: threading.Event) -> None:
    c = setup.cluster
    c.sql("create table if not exists live_writes (id serial primary key, note text, n int)")
    i = 0
    while not stop.is_set():
        try:
            c.sql(f"insert into live_writes (note, n) values ('soak {i}', {i})")
            c.sql(
                f"update shop.customers set name = 'customer {i}' where id = {1 + i % 2000}", "shop"
            )
            if i % 25 == 0:
                c.sql(
                    "delete from live_writes where id % 7 = 0"
                    " and id < (select max(id) - 100 from live_writes)"
                )
        except Exception as exc:  # noqa: BLE001 - a soak keeps going; the verdicts count
            print(f"  writer: {exc}", flush=True)
        i += 1
        stop.wait(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=50)
    parser.add_argument("--major", type=int, default=15)
    parser.add_argument("--every", type=int, default=5, help="new backups every N tests")
    args = parser.parse_args()
    setup = make_setup(args.major, None)
    stop = threading.Event()
    beat = None
    load = None
    try:
        load_rich_schema(setup.cluster)
        beat = subprocess.Popen(
            [PGPROOF, "--config", str(setup.config_path), "heartbeat"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        load = threading.Thread(target=writer, args=(setup, stop), daemon=True)
        load.start()
        time.sleep(2)
        verdicts: Counter[str] = Counter()
        bad: list[str] = []
        started = time.monotonic()
        for i in range(args.tests):
            if i % args.every == 0:
                for kind in ("logical", "physical"):
                    setup.pgproof("backup", kind, check=True, timeout=1800)
                time.sleep(3)  # some WAL after the backups, for --pitr random
                setup.cluster.switch_wal()
            kind, extra = ("logical", []) if i % 2 == 0 else ("physical", ["--pitr", "random"])
            proc = setup.pgproof("verify", "--kind", kind, *extra, "--json", timeout=1800)
            try:
                record = json.loads(proc.stdout)["results"][0]
                verdict, cause = record["verdict"], record["cause"]
            except (ValueError, KeyError, IndexError):
                verdict, cause = "crash", (proc.stderr or proc.stdout)[-500:]
            verdicts[verdict] += 1
            if verdict != "passed":
                bad.append(f"test {i + 1} ({kind}): {verdict}: {cause}")
            print(f"  {i + 1:3d}/{args.tests} {kind:<8} {verdict}", flush=True)
        elapsed = time.monotonic() - started
        print(
            f"\nPostgreSQL {args.major}, rich schema under light writes: "
            f"{len(bad)}/{args.tests} restore tests not passed ({dict(verdicts)}), "
            f"{elapsed:.0f} s; target 0/{args.tests}"
        )
        for line in bad:
            print(f"  {line}")
    finally:
        stop.set()
        if load is not None:
            load.join(10)
        if beat is not None:
            beat.terminate()
            beat.wait(10)
        destroy_setup(setup)


if __name__ == "__main__":
    main()
