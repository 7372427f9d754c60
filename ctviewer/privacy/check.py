"""The de-identification checker: which identifying values of the source files can still be
found in the outputs of an export?

``identifying_values(sources)`` collects, from every source DICOM file (at any depth of
sequences, private tags included), the values of every attribute that PS3.15 Table E.1-1
names (``table.action``; text of any VR but coded strings, numbers of six characters or more,
binary values) and, besides the table:
person names (whole and by component), IDs, dates (in the formats people write them), times,
UIDs (not the standard's own: SOP classes, transfer syntaxes), institution, station and
physician details, and the free-text descriptors (``deid.DESCRIPTORS``; allow-listed values
excepted), plus the file and folder names of the sources.  The patient characteristics
(age, sex, size, weight) count only where an age is 90 or more: they are kept under their option.
``find(values, outputs)`` searches the outputs: the names of their files and folders, DICOM elements at any depth including private tags, the text of PDF pages
(pypdf), CSV cells, PNG text chunks, and any other file as text.  Long values (>= 6
characters) are found as substrings, short ones only as a whole value or word, so that "M" or
"1" do not match everywhere.

``python -m ctviewer.deid_check --sources DIR... --outputs PATH...`` prints the findings
(exit 1 when any).
"""

from __future__ import annotations

import argparse
import csv
import re
import struct
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

from .deid import DESCRIPTOR_ALLOW, DESCRIPTORS, coarsen_age
from .table import CHARACTERISTICS, action

ID_KEYWORDS = {
    "PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "StudyID", "MedicalRecordLocator",
    "PerformedProcedureStepID", "RequestedProcedureID", "ScheduledProcedureStepID", "DeviceSerialNumber",
    "PlateID", "DetectorID", "CassetteID", "GantryID", "AdmissionID", "ServiceEpisodeID", "OtherPatientIDsSequence",
    "PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest", "PatientAddress",
    "PatientTelephoneNumbers", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "StationName", "PatientMotherBirthName", "MilitaryRank", "BranchOfService", "Occupation", "RegionOfResidence",
    "CountryOfResidence", "ResponsibleOrganization", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
}
KEEP_UIDS = {"SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID",
             "ImplementationClassUID", "CodingSchemeUID", "ContextUID", "MappingResourceUID"}
SHORT = 6
#: VRs whose value is text a person could be found by (for the attributes the table names).
TEXT_VRS = frozenset({"AE", "CS", "LO", "SH", "ST", "LT", "UT", "UC", "UR", "PN", "AS"})
#: Values that identify no one: what earlier de-identification left in the sources.
PLACEHOLDERS = {"REMOVED", "ANONYMOUS", "ANONYMIZED", "ANONYMISED", "ANON", "NONE", "UNKNOWN", "DELETED", "NA",
                "N/A", "NULL", "XXX", "EMPTY"}


@dataclass(frozen=True)
class Finding:
    output: str
    where: str  # element keyword / page / CSV cell / PNG chunk
    value: str
    what: str  # the source attribute it came from


def _date_forms(value: str) -> list[str]:
    v = value.strip().replace("-", "").replace(".", "")
    if not re.fullmatch(r"\d{8}", v):
        return [value] if value else []
    y, m, d = v[:4], v[4:6], v[6:8]
    return [v, f"{y}-{m}-{d}", f"{m}-{d}-{y}", f"{d}.{m}.{y}", f"{y}/{m}/{d}", f"{d}/{m}/{y}", f"{m}/{d}/{y}"]


def identifying_values(sources) -> dict[str, str]:
    """value -> the attribute (or "file name") it came from, over every source file."""
    import pydicom

    found: dict[str, str] = {}

    def add(value, what: str) -> None:
        text = str(value).strip()
        if text and text.upper() not in PLACEHOLDERS and not re.fullmatch(r"[\W_\d]{0,2}", text):
            found.setdefault(text, what)

    files = [f for src in sources for f in ([Path(src)] if Path(src).is_file() else sorted(Path(src).rglob("*")))
             if f.is_file()]
    for f in files:
        if len(f.stem) >= 4:
            add(f.stem, "file name")
        for part in f.parent.parts[-3:]:
            if len(part) >= 6:
                add(part, "folder name")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
            elements = list(ds.iterall())
        except Exception:  # noqa: BLE001 - not DICOM: its name is all it gives
            continue
        for e in elements:
            kw, vr = e.keyword or str(e.tag), e.VR
            values = e.value if isinstance(e.value, (list, tuple, pydicom.multival.MultiValue)) else [e.value]
            if vr == "SQ" or e.tag == 0x7FE00010:
                continue
            named = not e.tag.is_private and action(e.tag) is not None  # PS3.15 Table E.1-1 names it
            if kw in CHARACTERISTICS:  # retained only under their option; an age >= 90 identifies
                if kw == "PatientAge" and coarsen_age(e.value) != str(e.value).strip():
                    add(e.value, kw)
                continue
            for v in values:
                if v is None or v == "" or isinstance(v, bytes) and not (e.tag.is_private or named):
                    continue
                if vr == "PN":
                    add(v, kw)
                    for part in re.split(r"[\^=]", str(v)):
                        if len(part) >= 3:
                            add(part, kw)
                elif vr == "DA":
                    for form in _date_forms(str(v)):
                        add(form, kw)
                elif vr in ("TM", "DT") and len(str(v).split(".")[0]) >= 4:
                    add(str(v).split(".")[0], kw)
                elif vr == "UI" and kw not in KEEP_UIDS and not str(v).startswith("1.2.840.10008."):
                    add(v, kw)
                elif kw in ID_KEYWORDS or (kw in DESCRIPTORS and str(v).strip().upper() not in DESCRIPTOR_ALLOW):
                    add(v, kw)
                elif vr in ("ST", "LT", "UT", "UC") and len(str(v).strip()) >= SHORT:  # free text, any depth
                    add(v, kw)
                elif kw in DESCRIPTORS:  # allow-listed: kept by the Clean Descriptors option
                    continue
                elif named and vr in TEXT_VRS and len(str(v).strip()) >= 3:
                    add(v, kw)
                elif named and vr in ("DS", "IS") and len(str(v).strip()) >= SHORT:
                    add(v, kw)
                elif named and isinstance(v, bytes) and len(v.strip(b"\0 ")) >= SHORT:
                    add(v.strip(b"\0 ").decode("latin-1", "replace"), kw)
                elif e.tag.is_private and vr in ("LO", "SH", "ST", "LT", "UT", "PN", "UN") and isinstance(v, (str, bytes)):
                    text = v.decode("latin-1", "replace") if isinstance(v, bytes) else v
                    if len(text.strip("\0 ")) >= SHORT:
                        add(text.strip("\0 "), f"private {e.tag}")
    return found


def _strings(path: Path) -> list[tuple[str, str]]:
    """(where, text) pieces of one output file."""
    data = path.read_bytes()
    suffix = path.suffix.lower()
    if data[128:132] == b"DICM" or suffix == ".dcm":
        import pydicom

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, force=True)
            out = [(f"file meta {e.keyword}", str(e.value)) for e in ds.file_meta]
            for e in ds.iterall():
                if e.VR == "SQ" or e.tag == 0x7FE00010:
                    continue
                value = e.value.decode("latin-1", "replace") if isinstance(e.value, bytes) else str(e.value)
                out.append((e.keyword or str(e.tag), value))
            return out
        except Exception:  # noqa: BLE001
            pass
    if data.startswith(b"%PDF"):
        import pypdf

        reader = pypdf.PdfReader(path)
        out = [(f"page {i + 1}", page.extract_text() or "") for i, page in enumerate(reader.pages)]
        meta = reader.metadata or {}
        out += [(f"PDF metadata {k}", str(v)) for k, v in meta.items()]
        return out
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        out, pos = [], 8
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos:pos + 8])
            body = data[pos + 8:pos + 8 + length]
            if kind in (b"tEXt", b"iTXt", b"zTXt"):
                text = zlib.decompress(body.split(b"\0", 2)[-1][1:]) if kind == b"zTXt" else body
                out.append((f"PNG {kind.decode()}", text.decode("latin-1", "replace").replace("\0", " ")))
            pos += 12 + length
        return out
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            return [(f"CSV row {r + 1} col {c + 1}", cell) for r, row in enumerate(csv.reader(fh)) for c, cell in enumerate(row)]
    return [("text", data.decode("utf-8", "replace"))]


def _names(outputs) -> list[tuple[Path, str]]:
    """(file, a name under the output) for each file's name and each folder between it and the output."""
    out = []
    for o in map(Path, outputs):
        if o.is_file():
            out.append((o, o.name))
            continue
        for f in sorted(o.rglob("*")):
            if f.is_file():
                out += [(f, part) for part in f.relative_to(o).parts]
    return out


def find(values: dict[str, str], outputs) -> list[Finding]:
    files = [f for o in outputs for f in ([Path(o)] if Path(o).is_file() else sorted(Path(o).rglob("*"))) if f.is_file()]
    findings = []
    for f, name in _names(outputs):  # a file or folder named after the patient leaks as much as a tag
        upper = name.upper()
        tokens = set(re.split(r"[^A-Z0-9]+", upper))
        for v, what in values.items():
            if (len(v) >= SHORT and v.upper() in upper) or v.upper() in tokens:
                findings.append(Finding(str(f), f"file or folder name {name!r}", v, what))
    long_values = [(v, w) for v, w in values.items() if len(v) >= SHORT]
    short_values = {v.upper(): (v, w) for v, w in values.items() if len(v) < SHORT}
    # An all-digit value (a time, a date, a number ID) counts only where it is not part of a longer
    # number: "190120" (a source's acquisition time) inside the pseudonymous UID 2.25.…81901203…
    # is a coincidence of random digits, not a leak; "at 190120" or "ID190120X" is one.
    digit_runs = {v: re.compile(rf"(?<!\d){re.escape(v)}(?!\d)") for v, _ in long_values if v.isdigit()}
    for f in files:
        for where, text in _strings(f):
            upper = text.upper()
            for v, what in long_values:
                if v.upper() in upper and (v not in digit_runs or digit_runs[v].search(upper)):
                    findings.append(Finding(str(f), where, v, what))
            for token in {text.strip().upper(), *re.split(r"[^\w.-]+", upper)}:
                if token in short_values:
                    v, what = short_values[token]
                    findings.append(Finding(str(f), where, v, what))
    return findings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ctviewer.deid_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sources", nargs="+", required=True)
    ap.add_argument("--outputs", nargs="+", required=True)
    a = ap.parse_args(argv)
    values = identifying_values(a.sources)
    findings = find(values, a.outputs)
    for x in findings:
        print(f"{x.output}: {x.where}: {x.value!r} (source {x.what})")
    print(f"{len(findings)} identifying values found in the outputs ({len(values)} identifying values in the sources)",
          file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
