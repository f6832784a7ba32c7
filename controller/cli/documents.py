"""The commands every stored document kind shares: ``create -f FILE``, ``list``, ``get ID``, ``delete ID``.

A feature declares a `Collection` (its kind, its path, how to show one and
many) and adds the verbs with `add_document_group`, or one by one with the
``add_*`` methods when it has verbs of its own to place between them.

``create -f FILE`` sends the file as it is (YAML or JSON, ``-`` for stdin)
with the matching content type, so the API's errors name the fields of the
file the user wrote.  ``list``, ``get ID`` and ``delete ID`` print tables by
default, or the stored documents with ``-o json|yaml``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote

from controller.cli.client import EXIT_LOCAL_ERROR, EXIT_OK, HubClient
from controller.cli.commands import Common, Subparsers
from controller.cli.output import Output, Table, format_table, format_time

JSON_TYPE, YAML_TYPE = "application/json", "application/yaml"


# -- the stored shape ------------------------------------------------------------------

def fields_of(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored document's own fields.

    The API answers ``{id, revision, created_at, updated_at, ...fields}``;
    older hubs nested the fields under ``body``, which is read as well.
    """
    body = doc.get("body")
    return body if isinstance(body, dict) else doc


# -- files -----------------------------------------------------------------------------

class FileProblem(Exception):
    """The document file could not be read."""


class DocumentFile(NamedTuple):
    data: bytes
    content_type: str


def read_document_file(path: str) -> DocumentFile:
    """The bytes of ``path`` (``-`` is stdin) and the content type to send them with."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as exc:
        raise FileProblem(f"cannot read {path}: {exc.strerror or exc}") from None
    return DocumentFile(data, content_type_for(path, data))


def content_type_for(path: str, data: bytes) -> str:
    """By extension (.json, .yaml, .yml); otherwise JSON if it parses as a JSON object, else YAML."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        return JSON_TYPE
    if ext in (".yaml", ".yml"):
        return YAML_TYPE
    try:
        return JSON_TYPE if isinstance(json.loads(data), dict) else YAML_TYPE
    except ValueError:
        return YAML_TYPE


# -- the commands ----------------------------------------------------------------------

class Preview(NamedTuple):
    """``create --dry-run``: the API's ``dry_run=true`` answer, shown with ``table``."""
    table: Table
    help: str


class Filter(NamedTuple):
    """A ``list --NAME VALUE`` option, sent as the query parameter NAME."""
    name: str
    help: str
    choices: tuple[str, ...] | None = None


def row_tables(headers: list[str], row: Any, empty: str) -> tuple[Table, Table]:
    """The `one` and `many` tables of a kind shown one row per document."""
    def one(doc: dict[str, Any]) -> str:
        return f"{format_table(headers, [row(doc)])}\n\nupdated: {format_time(doc['updated_at'])}"

    def many(docs: list[dict[str, Any]]) -> str:
        return format_table(headers, map(row, docs)) if docs else empty
    return one, many


@dataclass(frozen=True)
class Collection:
    """One kind of stored document, and how hubctl shows it."""

    kind: str                        # the group's name, and the word in messages
    path: str                        # its REST collection, "/v1/subnets"
    one: Table                       # one stored document (get; create unless `created`)
    many: Table                      # a list of them
    created: Table | None = None     # the answer to create, where it says more than `one`
    preview: Preview | None = None   # adds ``create --dry-run``
    filters: tuple[Filter, ...] = ()

    def url(self, id: str, *rest: str) -> str:
        return self.path + "/" + "/".join(quote(part, safe=":") for part in (id, *rest))

    # handlers

    def create(self, args: argparse.Namespace, api: HubClient, out: Output) -> int:
        try:
            file = read_document_file(args.file)
        except FileProblem as exc:
            print(f"hubctl: {exc}", file=sys.stderr)
            return EXIT_LOCAL_ERROR
        preview = self.preview if self.preview is not None and args.dry_run else None
        doc = api.request("POST", self.path, params={"dry_run": "true" if preview else None},
                          content=file.data, headers={"content-type": file.content_type})
        out.emit(doc, preview.table if preview else self.created or self.one)
        return EXIT_OK

    def list(self, args: argparse.Namespace, api: HubClient, out: Output) -> int:
        out.emit(api.get(self.path, **{f.name: getattr(args, f.name) for f in self.filters}), self.many)
        return EXIT_OK

    def get(self, args: argparse.Namespace, api: HubClient, out: Output) -> int:
        out.emit(api.get(self.url(args.id)), self.one)
        return EXIT_OK

    def delete(self, args: argparse.Namespace, api: HubClient, out: Output) -> int:
        doc = api.request("DELETE", self.url(args.id))
        out.emit(doc, lambda d: f"deleted {self.kind} {d['id']} (revision {d['revision']})")
        return EXIT_OK

    # verbs

    def add_create(self, verbs: Subparsers, common: Common) -> None:
        p = common.command(verbs, "create", self.create, f"create a {self.kind} from a YAML or JSON file")
        p.add_argument("-f", "--file", required=True, metavar="FILE", help="document file; - reads stdin")
        if self.preview:
            p.add_argument("--dry-run", action="store_true", help=self.preview.help)

    def add_list(self, verbs: Subparsers, common: Common) -> None:
        p = common.command(verbs, "list", self.list, f"every {self.kind}")
        for f in self.filters:
            p.add_argument(f"--{f.name}", choices=f.choices, help=f.help)

    def add_get(self, verbs: Subparsers, common: Common) -> None:
        p = common.command(verbs, "get", self.get, f"one {self.kind}")
        p.add_argument("id", metavar="ID")

    def add_delete(self, verbs: Subparsers, common: Common, help: str | None = None) -> None:
        p = common.command(verbs, "delete", self.delete, help or f"delete a {self.kind}")
        p.add_argument("id", metavar="ID")


def add_document_group(sub: Subparsers, common: Common, collection: Collection, help: str) -> Subparsers:
    """``hubctl KIND create|list|get|delete``; the group's subparsers, for verbs of its own."""
    verbs = common.group(sub, collection.kind, help)
    for add in (collection.add_create, collection.add_list, collection.add_get, collection.add_delete):
        add(verbs, common)
    return verbs
