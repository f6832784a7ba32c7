"""Shadow appliances as a feature: the Feature interface over the manifests and slots.

For now it keeps what the store holds, parsed: the valid manifests
(``appliances``) and the slots (``slots``); an invalid stored manifest or
slot is logged and left out, never half used.  Mirroring flows, launching
and analysis are still to come (``mirror``, the agent channel); they read
these.
"""
from __future__ import annotations

import logging
from typing import Any

from controller.core import budgets
from controller.core.documents import DocumentInvalid
from controller.core.feature import Feature
from controller.features.shadow.document import KIND, SLOT, Appliance, Slot, parse_manifest

LOG = logging.getLogger("hubshift.shadows")


class ShadowFeature(Feature):
    name = "shadow"
    budget = budgets.SHADOW
    document_kinds = (KIND, SLOT)

    def __init__(self, ctx: Any, settings: Any = None) -> None:
        super().__init__(ctx, settings)
        self.appliances: dict[str, Appliance] = {}
        self.slots: dict[str, Slot] = {}

    def load(self) -> None:
        self.reload()

    def documents_changed(self, kind: str) -> None:
        if self.reload():
            self.ctx.changed()

    def reload(self) -> bool:
        """Re-read the manifests and slots; True if anything changed."""
        appliances = {}
        for doc in self.ctx.store.list(KIND):
            try:
                appliances[doc.id] = parse_manifest(doc.body)
            except DocumentInvalid as exc:
                LOG.error("ignoring invalid appliance manifest %s: %s", doc.id, exc)
        slots = {}
        for doc in self.ctx.store.list(SLOT):
            try:
                slots[doc.id] = Slot.from_body(doc.id, doc.body)
            except (KeyError, TypeError) as exc:
                LOG.error("ignoring invalid shadow slot %s: missing %s", doc.id, exc)
        changed = (appliances, slots) != (self.appliances, self.slots)
        self.appliances, self.slots = appliances, slots
        return changed
