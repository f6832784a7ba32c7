"""hubctl command group of the fabric: ``subnet`` (create -f FILE, list, get, delete)."""

from __future__ import annotations

from typing import Any

from controller.cli.commands import Common, Subparsers
from controller.cli.documents import Collection, add_document_group, fields_of, row_tables

SUBNET_HEADERS = ["ID", "CIDR", "GATEWAY", "REVISION", "DESCRIPTION"]


def _subnet_row(doc: dict[str, Any]) -> list[object]:
    f = fields_of(doc)
    return [doc["id"], f.get("cidr"), f.get("gateway"), doc["revision"], f.get("description")]


subnet_table, subnets_table = row_tables(SUBNET_HEADERS, _subnet_row, "(no subnets)")


SUBNETS = Collection("subnet", "/v1/subnets", one=subnet_table, many=subnets_table)


def register(sub: Subparsers, common: Common) -> None:
    add_document_group(sub, common, SUBNETS, "subnets the hub routes (create, list, get, delete)")
