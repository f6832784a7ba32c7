"""hubctl ``shard rotate|rotations|rotation``: force a rotation round and follow it.

``shard rotate POOL [--resource R ...]`` asks for a round and prints its id.
With ``--wait`` it reads the round again (``GET .../rotations/{id}``) every
0.5 s and prints each step's state as it changes (announcing, switching,
done or failed, with the addresses), then the round's outcome; it exits 0
when the round is done, 1 when it ended partial or failed or did not end
within ``--timeout`` seconds. With ``-o json|yaml`` only the final round is
written.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from controller.cli.client import EXIT_NOT_SUCCEEDED, EXIT_OK, ApiError, HubClient
from controller.cli.commands import Common, Subparsers
from controller.cli.output import Output, format_table, format_time, plural
from controller.features.shard.cli_shard import pool_url

POLL_INTERVAL_S = 0.5
DEFAULT_TIMEOUT_S = 120.0
RUNNING = "running"

_sleep: Callable[[float], None] = time.sleep       # replaced by tests
_clock: Callable[[], float] = time.monotonic       # replaced by tests


# -- tables ----------------------------------------------------------------------------

def _counts(rotation: dict[str, Any]) -> tuple[int, int, int]:
    steps = rotation.get("steps") or []
    return (len(steps), sum(s["state"] == "done" for s in steps),
            sum(s["state"] == "failed" for s in steps))


def rotations_table(rotations: list[dict[str, Any]]) -> str:
    rows = []
    for r in rotations:
        steps, done, failed = _counts(r)
        rows.append([r["id"], format_time(r.get("created_at")), r.get("reason"), r["state"],
                     steps, done, failed, format_time(r.get("finished_at"))])
    return (format_table(["ID", "STARTED", "REASON", "STATE", "STEPS", "DONE", "FAILED",
                          "FINISHED"], rows) if rows else "(no rotations)")


def _step_row(s: dict[str, Any]) -> list[object]:
    return [s["resource"], s.get("from_shard"), s.get("from_address"), s.get("to_shard"),
            s.get("to_address"), s["state"], s.get("message") or None]


def rotation_table(r: dict[str, Any]) -> str:
    fields: list[list[object]] = [
        ["id", r["id"]], ["pool", r.get("pool_id")], ["state", r["state"]],
        ["reason", r.get("reason")], ["forced", r.get("forced") or None],
        ["started", format_time(r.get("created_at"))],
        ["finished", format_time(r.get("finished_at"))],
        ["created shards", r.get("created_shards") or None],
        ["retired shards", r.get("retired_shards") or None],
        ["waiting", r.get("waiting") or None]]
    out = format_table(["FIELD", "VALUE"], fields)
    if r.get("steps"):
        out += "\n\nSTEPS\n" + format_table(
            ["RESOURCE", "FROM SHARD", "FROM", "TO SHARD", "TO", "STATE", "MESSAGE"],
            map(_step_row, r["steps"]))
    return out


def outcome(r: dict[str, Any]) -> str:
    steps, done, failed = _counts(r)
    line = f"rotation {r['id']} {r['state']}: {done} of {plural(steps, 'move')} done"
    if failed:
        line += f", {failed} failed"
    for what in ("created_shards", "retired_shards", "waiting"):
        if r.get(what):
            line += f"; {what.replace('_', ' ')}: {', '.join(r[what])}"
    return line


# -- following a round -----------------------------------------------------------------

class _Follower:
    """Prints each step's state the first time it is seen in it."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def see(self, r: dict[str, Any]) -> None:
        for s in r.get("steps") or []:
            if self.seen.get(s["resource"]) == s["state"]:
                continue
            self.seen[s["resource"]] = s["state"]
            where = f"{s.get('from_address') or '-'} ({s.get('from_shard') or '-'}) -> " \
                    f"{s.get('to_address') or '-'} ({s.get('to_shard')})"
            note = f": {s['message']}" if s.get("message") else ""
            print(f"{s['resource']}: {s['state']} {where}{note}")
            sys.stdout.flush()


def _read(api: HubClient, url: str) -> dict[str, Any] | None:
    """The round, or None while the hub has not stored it yet."""
    try:
        return dict(api.get(url))
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def wait_for(api: HubClient, pool: str, started: dict[str, Any], out: Output,
             timeout: float) -> int:
    """Follow the round until it ends; 0 when done, 1 partial, failed or timed out."""
    url = pool_url(pool, "rotations", started["id"])
    follow = _Follower() if out.format == "table" else None
    deadline = _clock() + timeout
    latest = _read(api, url)
    while latest is None or latest["state"] == RUNNING:
        if follow and latest:
            follow.see(latest)
        if _clock() >= deadline:
            state = latest["state"] if latest else "not stored yet"
            print(f"hubctl: rotation {started['id']} did not finish within {timeout:g} s "
                  f"(still {state}); see hubctl shard rotation {pool} {started['id']}",
                  file=sys.stderr)
            return EXIT_NOT_SUCCEEDED
        _sleep(POLL_INTERVAL_S)
        latest = _read(api, url)
    if follow:
        follow.see(latest)
        print(outcome(latest))
    else:
        out.emit(latest, rotation_table)
    return EXIT_OK if latest["state"] == "done" else EXIT_NOT_SUCCEEDED


# -- commands --------------------------------------------------------------------------

def cmd_rotate(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    body = {"resources": args.resource} if args.resource else {}
    started = api.request("POST", pool_url(args.pool, "rotate"), json=body)
    if args.wait:
        if out.format == "table":
            print(f"rotation {started['id']} started")
        return wait_for(api, args.pool, started, out, args.timeout)
    out.emit(started, lambda r: f"rotation {r['id']} {r['state']}; follow it with: "
                                f"hubctl shard rotation {args.pool} {r['id']}")
    return EXIT_OK


def cmd_rotations(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(pool_url(args.pool, "rotations")), rotations_table)
    return EXIT_OK


def cmd_rotation(args: argparse.Namespace, api: HubClient, out: Output) -> int:
    out.emit(api.get(pool_url(args.pool, "rotations", args.rotation)), rotation_table)
    return EXIT_OK


def add_verbs(verbs: Subparsers, common: Common) -> None:
    """``shard rotate|rotations|rotation``."""
    p = common.command(verbs, "rotate", cmd_rotate, "force a rotation round now")
    p.add_argument("pool", metavar="POOL")
    p.add_argument("--resource", action="append", metavar="RID",
                   help="move this resource (repeat for several; default: the round decides)")
    p.add_argument("--wait", action="store_true",
                   help="follow the round, step by step, until it ends")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"with --wait: give up after S seconds (default {DEFAULT_TIMEOUT_S:g})")
    p = common.command(verbs, "rotations", cmd_rotations, "a pool's rotation rounds, newest first")
    p.add_argument("pool", metavar="POOL")
    p = common.command(verbs, "rotation", cmd_rotation, "one rotation round and its steps")
    p.add_argument("pool", metavar="POOL")
    p.add_argument("rotation", metavar="ID")
