"""Issue 14: find, retrieve and send against a real Orthanc server (tests/orthanc.py), over
DICOMweb and DIMSE, through the command line (``ctviewer pacs``, ``ctviewer report --send``)."""

from __future__ import annotations

import csv
import functools
import http.server
import threading
from pathlib import Path

import pydicom
import pytest

from ctviewer import cli
from ctviewer.pacs import DicomWebNode, DimseNode, PacsError

from .gui_helpers import write_ct_series
from .model_fixtures import make_model_package
from .orthanc import PASSWORD, USER, Orthanc, orthanc_or_skip


@pytest.fixture(scope="module")
def sources(tmp_path_factory, request) -> list[Path]:
    """Real DICOM (Lung-PET-CT-Dx, two patients) when ../shared is there, else two synthetic
    patients (each its own ID; names without "^", which Orthanc's QIDO-RS matched to nothing),
    one with a study as large as the real one (40 slices of 512 x 512), so that a retrieval is
    still running when the server is stopped after 5 instances."""
    from tests.conftest import SHARED

    root = SHARED / "dicom" / "Lung-PET-CT-Dx"
    if root.is_dir():
        return sorted(root.rglob("*.dcm"))
    folder = tmp_path_factory.mktemp("synthetic")
    write_ct_series(folder / "a", n=40, size=512, patient="Alpha", patient_id="SYN-001")
    write_ct_series(folder / "b", n=6, size=64, patient="Beta", seed=3, patient_id="SYN-002")
    return sorted(folder.rglob("*.dcm"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, sources):
    orthanc_or_skip()
    s = Orthanc(tmp_path_factory.mktemp("orthanc"))
    s.upload(sources)
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("CTVIEWER_PACS_PASSWORD", PASSWORD)
    monkeypatch.setenv("CTVIEWER_DATA_DIR", str(tmp_path / "data"))


def web(server) -> list[str]:
    return ["--dicomweb", server.url, "--user", USER]


def dimse(server) -> list[str]:
    return ["--dimse", server.dimse, "--aet", "CTVIEWER"]


def studies_of(sources) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for f in sources:
        out.setdefault(str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID), []).append(f)
    return out


@pytest.mark.parametrize("proto", ["dicomweb", "dimse"])
def test_echo(server, proto, capsys):
    assert cli.main(["pacs", "echo", *(web(server) if proto == "dicomweb" else dimse(server))]) == 0
    assert "answers" in capsys.readouterr().err


def test_connection_faults_explain_themselves(server, capsys):
    # wrong called AE title, and an AE title the server does not know
    assert cli.main(["pacs", "echo", "--dimse", f"WRONGAE@127.0.0.1:{server.dicom_port}"]) == 1
    assert "rejected" in capsys.readouterr().err
    assert cli.main(["pacs", "echo", "--dimse", server.dimse, "--aet", "STRANGER"]) == 1
    err = capsys.readouterr().err
    assert "STRANGER" in err and ("rejected" in err or "aborted" in err)
    # wrong credentials
    assert cli.main(["pacs", "echo", "--dicomweb", server.url, "--user", "intruder"]) == 1
    assert "refused our credentials" in capsys.readouterr().err
    # nobody listening
    from .orthanc import free_port

    port = free_port()
    assert cli.main(["pacs", "echo", "--dimse", f"ORTHANC@127.0.0.1:{port}", "--timeout", "3"]) == 1
    assert "connection refused" in capsys.readouterr().err
    assert cli.main(["pacs", "echo", "--dicomweb", f"http://127.0.0.1:{port}/dicom-web", "--timeout", "3"]) == 1
    assert "connection refused" in capsys.readouterr().err
    assert cli.main(["pacs", "echo", "--dimse", "not-a-node"]) == 1
    assert "AET@HOST:PORT" in capsys.readouterr().err


@pytest.mark.parametrize("proto", ["dicomweb", "dimse"])
def test_find_filters(server, sources, proto, tmp_path, capsys):
    node = web(server) if proto == "dicomweb" else dimse(server)
    by_study = studies_of(sources)
    out = tmp_path / "studies.csv"
    assert cli.main(["pacs", "find", *node, "--modality", "CT", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {r["study_uid"] for r in rows} == set(by_study)
    for r in rows:
        assert int(r["instances"]) == len(by_study[r["study_uid"]])
    first = pydicom.dcmread(sources[0], stop_before_pixels=True)
    pid = str(first.PatientID)
    assert cli.main(["pacs", "find", *node, "--patient-id", pid, "--csv", str(out)]) == 0
    assert [r["patient_id"] for r in csv.DictReader(out.open())] == [pid]
    name = str(first.PatientName)
    # a pattern over DIMSE; Orthanc 1.10's QIDO-RS matches PatientName only exactly (a server limit)
    pattern = name[:4] + "*" if proto == "dimse" else name
    assert cli.main(["pacs", "find", *node, "--patient-name", pattern, "--csv", str(out)]) == 0
    assert pid in [r["patient_id"] for r in csv.DictReader(out.open())]
    date = str(first.StudyDate)
    assert cli.main(["pacs", "find", *node, "--study-date", f"{date}-{date}", "--csv", str(out)]) == 0
    assert all(r["study_date"] == date for r in csv.DictReader(out.open()))
    assert cli.main(["pacs", "find", *node, "--study-date", "18000101"]) == 0
    assert "0 studies found" in capsys.readouterr().err


def smallest_study_copy(sources, tmp_path: Path) -> tuple[str, Path, Path]:
    """(study UID, a folder with a copy of its files, a tiny model package) for report --send."""
    by_study = studies_of(sources)
    study = min(by_study, key=lambda u: len(by_study[u]))
    src = tmp_path / "src"
    src.mkdir()
    for f in by_study[study]:
        (src / f.name).write_bytes(f.read_bytes())
    return study, src, make_model_package(tmp_path / "model")


def _same(received: Path, original: Path) -> bool:
    """The same object: every element's value (the transfer syntax may differ: a server may
    send its stored syntax, pydicom reads implicit VR private elements as bytes) and the pixels."""
    a, b = pydicom.dcmread(received), pydicom.dcmread(original, force=True)  # some sources lack file meta
    differ = [t for t in b.keys() if t != 0x7FE00010 and b[t].VR != "SQ" and t.group != 0x0002
              and (t not in a or (a[t].value != b[t].value and not t.is_private))]
    assert not differ, f"{received.name}: {[str(t) for t in differ]}"
    return a.PixelData == b.PixelData


@pytest.mark.parametrize("proto", ["dicomweb", "dimse"])
def test_get_whole_study_and_resume_after_the_server_stops(server, sources, proto, tmp_path, capsys):
    node_args = web(server) if proto == "dicomweb" else dimse(server)
    by_study = studies_of(sources)
    study = max(by_study, key=lambda u: len(by_study[u]))
    dest = tmp_path / "study"
    # the server stops in the middle of the retrieval: what arrived stays, the rest is "missing"
    node = (DicomWebNode(server.url, USER, PASSWORD) if proto == "dicomweb"
            else DimseNode(server.dimse, "CTVIEWER"))
    stopped = []

    def progress(done, total):
        if done >= 5 and not stopped:
            stopped.append(done)
            server.stop()

    try:
        first = node.get(study, dest, progress=progress)
    finally:
        if not stopped:
            server.stop()
        server.start()
    assert first.error and first.received >= 5 and first.missing > 0
    kept = sorted(dest.glob("*.dcm"))
    assert len(kept) == first.received and not list(dest.glob(".*part"))
    # a second get completes the study, fetching only what is missing
    assert cli.main(["pacs", "get", *node_args, study, "--to", str(dest)]) == 0
    err = capsys.readouterr().err
    assert f"{first.missing} instances received, {first.received} already" in err
    originals = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in by_study[study]}
    got = {p.stem: p for p in dest.glob("*.dcm")}
    assert set(got) == set(originals)
    assert all(_same(got[u], originals[u]) for u in got)
    # a third get has nothing to do
    assert cli.main(["pacs", "get", *node_args, study, "--to", str(dest)]) == 0
    assert f"0 instances received, {len(originals)} already" in capsys.readouterr().err


@pytest.mark.parametrize("proto", ["dicomweb", "dimse"])
def test_report_sends_the_sr_into_the_study(server, sources, proto, tmp_path, capsys):
    study, src, model = smallest_study_copy(sources, tmp_path)
    out = tmp_path / "out"
    args = ["report", str(src), "--pdf", str(out / "r.pdf"), "--sr", str(out / "sr.dcm"), "--sc", str(out / "sc.dcm"),
            "--model", str(model), "--send", *(web(server) if proto == "dicomweb" else dimse(server))]
    assert cli.main(args) == 0, capsys.readouterr().err
    assert "found there again" in capsys.readouterr().err
    sr = pydicom.dcmread(out / "sr.dcm")
    assert str(sr.StudyInstanceUID) == study
    node = DicomWebNode(server.url, USER, PASSWORD)
    assert node.has_instance(study, str(sr.SOPInstanceUID))  # in the images' study, found by query
    assert node.has_instance(study, str(pydicom.dcmread(out / "sc.dcm").SOPInstanceUID))


def test_a_failed_store_is_reported_and_can_be_retried(server, sources, tmp_path, capsys):
    study, src, model = smallest_study_copy(sources, tmp_path)
    out = tmp_path / "out"
    args = ["report", str(src), "--pdf", str(out / "r.pdf"), "--sr", str(out / "sr.dcm"), "--model", str(model),
            "--send", *web(server), "--timeout", "3"]
    server.stop()
    try:
        assert cli.main(args) == 1
    finally:
        server.start()
    err = capsys.readouterr().err
    assert "not sent" in err and "run again" in err and (out / "sr.dcm").exists()
    assert cli.main(args) == 0  # the retry


class _Hostile(http.server.BaseHTTPRequestHandler):
    body = b"{not json"

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *a):
        pass


def test_malformed_answers_are_refused():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Hostile)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        node = DicomWebNode(f"http://127.0.0.1:{httpd.server_port}/dicom-web", timeout=5)
        with pytest.raises(PacsError, match="malformed"):
            node.find()
        _Hostile.body = b'[{"0020000D": {"vr": "UI", "Value": ["../../etc/passwd"]}}]'
        assert node.find() == []  # not a UID: dropped, never used as a file name
        _Hostile.body = b'[{"00080018": {"vr": "UI", "Value": ["../x"]}, "0020000E": {"vr": "UI", "Value": ["1.2"]}}]'
        assert node.instances("1.2.3") == []
    finally:
        httpd.shutdown()


def test_a_port_that_is_not_one_is_refused_before_any_connection(capsys):
    """Issue 22: port 70000 used to end in a thread traceback and a 'wrong AE title' message."""
    assert cli.main(["pacs", "echo", "--dimse", "ORTHANC@127.0.0.1:70000"]) == 1
    err = capsys.readouterr().err
    assert "port 70000 is not a TCP port" in err and "Traceback" not in err
    with pytest.raises(PacsError, match="not a TCP port"):
        DicomWebNode("http://127.0.0.1:99999/dicom-web")


def test_credentials_never_stay_in_a_url(capsys):
    """Issue 22: user and password in a DICOMweb URL move to the session's authentication; the
    URL that is shown, logged and stored has none."""
    node = DicomWebNode("https://alice:s%40cret@pacs.example.org:8443/dicom-web/", timeout=1)
    assert node.url == "https://pacs.example.org:8443/dicom-web"
    assert node.session.auth == ("alice", "s@cret")
    assert "cret" not in node.describe() and "alice" not in node.describe()
    assert cli.main(["pacs", "echo", "--dicomweb", "http://bob:hunter2@127.0.0.1:1/dicom-web", "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert "hunter2" not in err and "bob" not in err and "127.0.0.1:1" in err


def test_tls_options_hold_whatever_the_environment_says(monkeypatch):
    """Issue 22: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace a session's verify;
    --insecure and --ca-bundle reach every request as given."""
    import requests

    from ctviewer.pacs import node_from_args

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    for kw, want in (({"insecure": True}, False), ({"ca_bundle": "/our/ca.pem"}, "/our/ca.pem"), ({}, True)):
        node = node_from_args(dicomweb="https://pacs.example.org/dicom-web", **kw)
        seen = {}
        node._orig_request = lambda method, url, **k: (seen.update(k), requests.models.Response())[1]
        node.session.request("GET", node.url + "/studies", verify=True, timeout=20)
        assert seen["verify"] == want and seen["timeout"] == node.timeout  # not dicomweb-client's own 20 s


def test_file_system_refusals_are_one_line_and_retrieved_files_are_private(server, sources, tmp_path, capsys):
    """Issue 22: a --csv that is a folder or cannot be made, a --to that is a file, a --key whose
    folder cannot be made: one line with the path and the reason, exit 1, no traceback. What
    ``pacs get --to`` makes is the user's only: folder 0700, files 0600."""
    import stat

    study = next(iter(studies_of(sources)))
    (tmp_path / "afile").write_text("x")
    for args, where in ((["find", *web(server), "--csv", str(tmp_path)], str(tmp_path)),
                        (["find", *web(server), "--csv", str(tmp_path / "afile" / "x.csv")], "x.csv"),
                        (["get", *web(server), study, "--to", str(tmp_path / "afile")], "afile")):
        assert cli.main(["pacs", *args]) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and where in err.splitlines()[-1], err
    out = tmp_path / "out"
    assert cli.main(["pacs", "get", *web(server), study, "--to", str(out)]) == 0
    files = list(out.rglob("*.dcm"))
    assert files and stat.S_IMODE(out.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}


def test_an_instance_of_another_study_or_patient_is_refused_and_the_study_is_not_complete(tmp_path):
    """Issue 22: a server that slips another patient's instance (or another study's) into a
    retrieval: refused with the reason, never written into the study folder, and the retrieval
    does not report complete. Both protocols keep what arrives through the same ``_arrived``."""
    from ctviewer.pacs.client import GetResult, _arrived

    write_ct_series(tmp_path / "a", n=3, size=32, patient="Alpha^Ann")
    write_ct_series(tmp_path / "b", n=1, size=32, patient="Beta^Bob", seed=3)
    ours = [pydicom.dcmread(f) for f in sorted((tmp_path / "a").glob("*.dcm"))]
    other_study = pydicom.dcmread(next((tmp_path / "b").glob("*.dcm")))
    study = str(ours[0].StudyInstanceUID)
    other_patient = pydicom.dcmread(sorted((tmp_path / "a").glob("*.dcm"))[2])
    other_patient.SOPInstanceUID = pydicom.uid.generate_uid()
    other_patient.PatientID = "SOMEONE-ELSE"
    dest = tmp_path / "study"
    dest.mkdir()
    arriving = [*ours[:2], other_study, other_patient]
    wanted = {str(d.SOPInstanceUID) for d in arriving}
    result = GetResult(study, expected=len(arriving))
    for ds in arriving:
        _arrived(ds, dest, set(), wanted, result, None)
    assert result.received == 2 and not result.complete and result.missing == 2
    why = dict(result.refused)
    assert "another study" in why[str(other_study.SOPInstanceUID)]
    assert "another patient" in why[str(other_patient.SOPInstanceUID)]
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{d.SOPInstanceUID}.dcm" for d in ours[:2])


def test_a_flood_of_matches_or_instances_is_refused_with_one_message(server, sources, capsys):
    """Issue 22: a search that answers more than --max-matches studies, or a study that lists
    more than --max-instances instances, is refused in one line (exit 1), over both protocols
    (DIMSE: the association is aborted as soon as the bound is passed)."""
    study = next(iter(studies_of(sources)))
    n_instances = len(studies_of(sources)[study])
    assert n_instances >= 2
    for node in (web(server), dimse(server)):
        assert cli.main(["pacs", "find", *node, "--max-matches", "1"]) == 1
        err = capsys.readouterr().err
        assert "more than 1 matches" in err and "--max-matches" in err and "Traceback" not in err
        assert cli.main(["pacs", "find", *node, "--max-matches", "100"]) == 0
        capsys.readouterr()
        assert cli.main(["pacs", "get", *node, study, "--to", "unused", "--max-instances", "1"]) == 1
        assert "more than 1 instances in the study" in capsys.readouterr().err


def test_a_hostile_search_answer_larger_than_the_bound_is_refused():
    """The same bound against a server that ignores the limit it was asked for (QIDO ``limit``)."""
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Hostile)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        _Hostile.body = ("[" + ",".join(['{"0020000D": {"vr": "UI", "Value": ["1.2.%d"]}}' % i for i in range(50)])
                         + "]").encode()
        node = DicomWebNode(f"http://127.0.0.1:{httpd.server_port}/dicom-web", timeout=5, max_matches=20)
        with pytest.raises(PacsError, match="more than 20 matches"):
            node.find()
        assert len(DicomWebNode(node.url, timeout=5, max_matches=50).find()) == 50
    finally:
        _Hostile.body = b"{not json"
        httpd.shutdown()


class _Slow(http.server.BaseHTTPRequestHandler):
    """A server that answers at once and then sends its body a byte every 0.2 s (bounded: 60 bytes)."""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", "60")
        self.end_headers()
        import time

        try:
            for _ in range(60):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass  # the client gave up: what the test wants

    def log_message(self, *a):
        pass


@functools.lru_cache(maxsize=1)
def _bomb_body() -> bytes:
    import gzip

    return gzip.compress(b"[" + b" " * (256 << 20) + b"]", compresslevel=9)


class _Bomb(http.server.BaseHTTPRequestHandler):
    """A gzip-encoded search answer that decodes to 256 MiB from about 256 KiB."""

    def do_GET(self):  # noqa: N802
        body = _bomb_body()
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *a):
        pass


def _serve(handler):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def test_a_server_that_trickles_cannot_stretch_the_timeout():
    """Issue 22: requests' timeout holds for each read, so a byte every 0.2 s never tripped it;
    a reply must keep MIN_RATE once it has taken longer than the timeout."""
    import time

    httpd = _serve(_Slow)
    try:
        node = DicomWebNode(f"http://127.0.0.1:{httpd.server_port}/dicom-web", timeout=1)
        t0 = time.monotonic()
        with pytest.raises(PacsError, match="too slowly"):
            node.find()
        assert time.monotonic() - t0 < 4  # the body alone would take 12 s
    finally:
        httpd.shutdown()


def test_a_compression_bomb_is_refused_before_it_is_decoded():
    """Issue 22: a 256 KiB gzip answer that decodes to 256 MiB (the issue's QIDO bomb cost 2.2 GB)
    is refused once it expands past MAX_EXPANSION to 1; memory stays near the floor."""
    import tracemalloc

    from ctviewer.pacs.client import EXPANSION_FLOOR

    _bomb_body()  # made before measuring: the server's memory is not the client's
    httpd = _serve(_Bomb)
    try:
        node = DicomWebNode(f"http://127.0.0.1:{httpd.server_port}/dicom-web", timeout=5)
        tracemalloc.start()
        with pytest.raises(PacsError, match="compression bomb"):
            node.find()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"compression bomb ({len(_bomb_body()) >> 10} KiB -> 256 MiB): refused, peak traced memory "
              f"{peak / 2**20:.1f} MiB")
        assert peak < 4 * EXPANSION_FLOOR, peak
    finally:
        httpd.shutdown()
