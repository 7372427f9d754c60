"""DICOM PS3.15 Table E.1-1, the Basic Application Level Confidentiality Profile's action for
every attribute, as transcribed by ``dicom-anonymizer`` (Kitware; its ``dicomfields_2026c`` is
generated from the standard's current edition, 2026c).  We take the table from that library
rather than keep our own copy: it is regenerated from the standard with each edition.

Actions (PS3.15 E.1.1): D replace with a dummy value, Z empty (or a dummy), X remove, K keep,
C clean, U replace the UID consistently; "X/Z", "X/D", "Z/D", "X/Z/D" let the de-identifier
choose; "X/Z/U*" (Referenced Image Sequence, Source Image Sequence): keep the sequence and
replace the UIDs inside it.  Repeating groups: curve data (50xx,xxxx) and overlay data and
comments (60xx,3000), (60xx,4000).
"""

from __future__ import annotations

from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as _table

EDITION = "2026c"

_CATEGORIES = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D", "X_Z_TAGS": "X/Z",
               "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*"}

EXACT: dict[int, str] = {}
MASKED: list[tuple[int, int, int, int, str]] = []  # (group, element, group mask, element mask, action)
for _name, _action in _CATEGORIES.items():
    for _entry in getattr(_table, _name):
        if len(_entry) == 2:
            EXACT[(_entry[0] << 16) | _entry[1]] = _action
        else:
            MASKED.append((*_entry, _action))

#: Table E.1-1's "Retain Patient Characteristics Option" (113108): kept only when asked
#: (``--keep-characteristics``); an age of 90 or more is coarsened to 090Y even then.
CHARACTERISTICS = frozenset({"PatientAge", "PatientSex", "PatientSexNeutered", "PatientSize", "PatientWeight",
                             "EthnicGroup", "PregnancyStatus", "SmokingStatus"})


def action(tag: int) -> str | None:
    """Table E.1-1's action for a (public) tag, or None when the table does not name it (K)."""
    tag = int(tag)
    found = EXACT.get(tag)
    if found is not None:
        return found
    group, element = tag >> 16, tag & 0xFFFF
    for g, e, gm, em, act in MASKED:
        if group & gm == g and element & em == e:
            return act
    return None


def is_overlay_or_curve(tag: int) -> bool:
    """Any element of the overlay (60xx) or curve (50xx) repeating groups: all are removed."""
    group = int(tag) >> 16
    return group & 0xFF00 in (0x5000, 0x6000) and group % 2 == 0
