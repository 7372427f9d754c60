"""``python -m tests.fuzz TARGET [libFuzzer options] [CORPUS_DIR...]``: run one target of
``tests/fuzz/targets.py`` under atheris (coverage-guided: ctviewer, pydicom, dicomweb-client and
pynetdicom's decoder are instrumented).  ``python -m tests.fuzz seeds DIR`` writes a seed corpus:
the first 64 KiB of up to 120 files of ../shared/data/dicom (real scanners, DICOMDIRs and the
malformed collection) when it is there, and small synthetic slices and replies always.
``./dev.sh fuzz [SECONDS]`` does both for every target."""

from __future__ import annotations

import sys
from pathlib import Path


def seeds(out: Path) -> int:
    import json
    import random

    from tests.conftest import SHARED

    out.mkdir(parents=True, exist_ok=True)
    n = 0
    root = SHARED / "dicom"
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix not in (".md", ".tsv", ".txt")
                   and p.name != "LICENSE") if root.is_dir() else []
    random.Random(0).shuffle(files)
    for f in files[:120]:
        (out / f"shared-{n:03d}").write_bytes(f.read_bytes()[:65536])
        n += 1
    from tests.gui_helpers import write_ct_series

    synthetic = out.parent / (out.name + "-synthetic")
    write_ct_series(synthetic, n=3, size=16)
    for f in sorted(synthetic.glob("*.dcm")):
        data = f.read_bytes()
        for prefix in (b"", b"\x03\x01", b"\x03\x00"):  # a slice; a DIMSE data set (no preamble: body)
            body = data if not prefix else data[data.index(b"\x08\x00\x05\x00") if b"\x08\x00\x05\x00" in data else 0:]
            (out / f"synthetic-{n:03d}").write_bytes(prefix + body)
            n += 1
        part = b"--FUZZB\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--FUZZB--\r\n"
        (out / f"multipart-{n:03d}").write_bytes(b"\x02" + part)
        n += 1
    n += _raster_seeds(out, n)
    listing = [{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": "A^B"}]},
                "00100020": {"vr": "LO", "Value": ["PID"]}, "00080020": {"vr": "DA", "Value": ["20200101"]},
                "00201208": {"vr": "IS", "Value": [3]}}]
    (out / "qido-000").write_bytes(b"\x00" + json.dumps(listing).encode())
    (out / "qido-001").write_bytes(b"\x01" + json.dumps(listing).encode())
    return n


def _raster_seeds(out: Path, n: int) -> int:
    """PNG and JPEG in every mode the reader accepts (grey, 16-bit, RGB, RGBA, palette, grey +
    alpha, CMYK JPEG), small, of a synthetic chest; written as ``raster-NNN``."""
    import io

    import numpy as np
    from PIL import Image

    from tests.synthetic import chest_png8

    grey = chest_png8(96, 72, lesion=True)
    images = [("PNG", Image.fromarray(grey)), ("PNG", Image.fromarray(grey.astype(np.uint16) * 257)),
              ("PNG", Image.fromarray(np.dstack([grey] * 3))), ("PNG", Image.fromarray(np.dstack([grey] * 3 + [grey]))),
              ("PNG", Image.fromarray(grey).convert("P")), ("PNG", Image.fromarray(np.dstack([grey, grey]), "LA")),
              ("JPEG", Image.fromarray(grey)), ("JPEG", Image.fromarray(np.dstack([grey] * 3)).convert("CMYK"))]
    for k, (fmt, im) in enumerate(images):
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        (out / f"raster-{n + k:03d}").write_bytes(buf.getvalue())
    return len(images)


def main(argv: list[str]) -> int:
    if argv[:1] == ["seeds"]:
        print(f"{seeds(Path(argv[1]))} seed inputs written to {argv[1]}")
        return 0
    import atheris

    with atheris.instrument_imports(include=["ctviewer", "pydicom", "dicomweb_client", "pynetdicom", "PIL"]):
        # imported here, not lazily by the targets: atheris instruments what is imported inside
        import PIL.Image  # noqa: F401
        import PIL.JpegImagePlugin  # noqa: F401
        import PIL.PngImagePlugin  # noqa: F401

        import ctviewer.imaging.io  # noqa: F401
        import ctviewer.imaging.preprocess  # noqa: F401
        import ctviewer.pacs.client  # noqa: F401
        import ctviewer.studies  # noqa: F401
        import dicomweb_client.web  # noqa: F401
        import pydicom  # noqa: F401
        import pynetdicom.dsutils  # noqa: F401

        from tests.fuzz import targets

    if not argv or argv[0] not in targets.TARGETS:
        print(f"usage: python -m tests.fuzz {{{','.join(targets.TARGETS)}|seeds}} [libFuzzer options] [CORPUS...]",
              file=sys.stderr)
        return 2
    fn = getattr(targets, argv[0])
    atheris.Setup([sys.argv[0], *argv[1:]], fn)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
