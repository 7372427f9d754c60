"""Issue 22: what the fuzzers found stays fixed.  Every input kept under tests/fuzz/regressions/TARGET/
(the crash that libFuzzer wrote, or the hand-made case it pointed at) goes through its target again
and must end in a clear refusal or a read; the seed corpus's synthetic inputs run too, so a target
that breaks (an import, a signature) fails here and not only in ``./dev.sh fuzz``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz import targets

REGRESSIONS = Path(__file__).parent / "fuzz" / "regressions"
CASES = sorted((t, p) for t in targets.TARGETS for p in (REGRESSIONS / t).glob("*") if p.is_file())


@pytest.mark.parametrize("target,path", CASES, ids=[f"{t}/{p.name}" for t, p in CASES])
def test_a_kept_finding_is_answered_clearly(target, path):
    getattr(targets, target)(path.read_bytes())


def test_every_target_has_kept_findings_or_runs_its_seeds(tmp_path):
    from tests.fuzz.__main__ import seeds

    seeds(tmp_path / "seeds")
    inputs = sorted((tmp_path / "seeds").glob("synthetic-*")) + sorted((tmp_path / "seeds").glob("multipart-*")) + \
        sorted((tmp_path / "seeds").glob("qido-*"))
    rasters = sorted((tmp_path / "seeds").glob("raster-*"))  # every PNG/JPEG mode (issue 24: Pillow decodes them)
    assert inputs and len(rasters) >= 8
    for t in targets.TARGETS:
        for p in inputs[:8] + rasters:
            getattr(targets, t)(p.read_bytes())


def test_the_pacs_findings_are_refused_in_one_message():
    """The three PACS findings: a QIDO answer that is a number, a listing of numbers, a multipart
    part that is not DICOM: each is now a PacsError naming the malformed answer (was a TypeError,
    an AttributeError and pydicom's InvalidDicomError: tracebacks in `ctviewer pacs`)."""
    from ctviewer.pacs import PacsError

    node = targets._node()
    targets._NODE["reply"] = lambda url: (b"999", "application/dicom+json")
    with pytest.raises(PacsError, match="malformed"):
        node.find()
    targets._NODE["reply"] = lambda url: (b"[1, 2]", "application/dicom+json")
    with pytest.raises(PacsError, match="malformed"):
        node.instances(targets.STUDY)
    body = b"--FUZZB\r\nContent-Type: application/dicom\r\n\r\nxx\r\n--FUZZB--"
    targets._NODE["reply"] = lambda url: ((body, 'multipart/related; type="application/dicom"; boundary=FUZZB')
                                          if "/series/" in url else (targets.LISTING, "application/dicom+json"))
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        result = targets._node().get(targets.STUDY, Path(d) / "s")
    assert "malformed" in result.error and result.received == 0
