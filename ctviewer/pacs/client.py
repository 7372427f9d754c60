"""Working with a hospital's PACS: find, retrieve and send, over DICOMweb (``dicomweb-client``:
QIDO-RS, WADO-RS, STOW-RS) or DIMSE (``pynetdicom``: C-ECHO, C-FIND, C-GET, C-STORE).  No Qt here:
the command line (``ctviewer pacs``) and the GUI's "Open from PACS…" share it.

A node is ``--dicomweb URL`` (http or https; basic or bearer auth; certificate verification on
unless turned off) or ``--dimse AET@HOST:PORT`` with our calling AE title (``--aet``, default
CTVIEWER).  Every failure becomes a ``PacsError`` with a sentence a user can act on
(refused, timed out, wrong AE title, wrong credentials).

Retrieval is resumable and careful: the instances of the study are listed first, those already
in the destination folder (``<SOPInstanceUID>.dcm``) are skipped, each received instance is
parsed before it is kept (written to a temporary name, then moved), its SOP Instance UID must be
one that was asked for and a well-formed UID (it names the file: a hostile server cannot write
elsewhere), and a connection lost half-way leaves what arrived and says how many are missing;
the next ``get`` fetches only those.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse, urlunparse

log = logging.getLogger("ctviewer.pacs")
UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
DEFAULT_AET = "CTVIEWER"
STUDY_FIELDS = ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "StudyDescription",
                "ModalitiesInStudy", "NumberOfStudyRelatedInstances")


class PacsError(Exception):
    """A PACS operation failed; the message says why in a user's words."""


@dataclass(frozen=True)
class StudyRow:
    study_uid: str
    patient_id: str = ""
    patient_name: str = ""
    date: str = ""
    description: str = ""
    modalities: str = ""
    instances: int | None = None

    def as_row(self) -> list[str]:
        return [self.study_uid, self.patient_id, self.patient_name, self.date, self.description, self.modalities,
                "" if self.instances is None else str(self.instances)]


CSV_COLUMNS = ("study_uid", "patient_id", "patient_name", "study_date", "description", "modalities", "instances")


@dataclass
class GetResult:
    study_uid: str
    expected: int = 0
    received: int = 0  # in this call
    already: int = 0  # present before the call (resumed)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (SOP Instance UID or "?", why)
    error: str = ""  # the connection failed half-way (what arrived is kept)
    cancelled: bool = False
    patient_id: str | None = None  # the study's Patient ID, from the first instance kept (or already here)

    @property
    def missing(self) -> int:
        return max(0, self.expected - self.received - self.already)

    @property
    def complete(self) -> bool:
        return self.expected > 0 and self.missing == 0 and not self.error


#: Bounds on what a server may send (issue 22), raised per node by ``--max-matches`` /
#: ``--max-instances``: a flood of matches or a study that lists millions of instances is
#: refused with one message instead of filling memory and disk.
MAX_MATCHES = 10_000
MAX_INSTANCES = 20_000
#: One instance, decoded (``--max-instance-mb``): a DIMSE data set, a multipart part of a
#: DICOMweb reply, a deflated C-STORE once inflated.
MAX_INSTANCE_BYTES = 2 << 30
#: Free space a retrieval leaves on the destination's disk: past it, it stops and says so.
DISK_RESERVE = 256 << 20


def _too_many(who: str, what: str, cap: int, flag: str) -> PacsError:
    return PacsError(f"{who}: the server answered more than {cap:,} {what}: narrow the query, or raise the "
                     f"bound with {flag} if that is right")


#: Ask for the stored transfer syntax: a server that transcodes every instance (to explicit VR
#: little endian, the default) spends most of a retrieval doing it.
ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)


def plan(listed: list[tuple[str, str]], todo: list[tuple[str, str]]) -> list[tuple[str, list[str], bool]]:
    """How to fetch what is missing: per series, (series, missing SOP UIDs, whole series?).  A
    series of which more than half is missing is fetched in one request (its instances already
    here are dropped on arrival); a few missing instances are fetched one by one."""
    total: dict[str, int] = {}
    for s, _u in listed:
        total[s] = total.get(s, 0) + 1
    missing: dict[str, list[str]] = {}
    for s, u in todo:
        missing.setdefault(s, []).append(u)
    return [(s, uids, len(uids) * 2 > total.get(s, 0)) for s, uids in missing.items()]


def _begin_get(node, study_uid: str, dest: Path):
    """What a retrieval starts from, for either protocol: (listed, missing, present UIDs,
    wanted UIDs, the result so far).  The study's instances are listed first; those already
    in ``dest`` are not fetched again."""
    if not valid_uid(study_uid):
        raise PacsError(f"{study_uid!r} is not a Study Instance UID")
    if not dest.is_dir():  # a folder made for patient data: the user's only (an existing one keeps its mode)
        dest.mkdir(parents=True, mode=0o700)
        os.chmod(dest, 0o700)
    listed = node.instances(study_uid)
    have = _present(dest)
    todo = [(s, u) for s, u in listed if u not in have]
    result = GetResult(study_uid, expected=len(listed), already=len(listed) - len(todo))
    result.patient_id = _patient_of(dest, have)
    return listed, todo, have, {u for _s, u in todo}, result


def _arrived(ds, dest: Path, have: set[str], wanted: set[str], result: GetResult, progress) -> None:
    """One received instance: kept (and counted) or refused with the reason; an instance already
    here (a series fetched whole) is dropped."""
    try:
        if str(getattr(ds, "SOPInstanceUID", "")) in have:
            return
        got, why = _keep(dest, None, ds, wanted, result)
    except Exception as exc:  # noqa: BLE001 - pydicom parses lazily: a hostile element fails when read
        got, why = "?", f"not a readable DICOM object ({type(exc).__name__})"  # (found by fuzzing)
    if why:
        result.refused.append((got, why))
        return
    result.received += 1
    have.add(got)
    if progress:
        progress(result.received + result.already, result.expected)


def _shortfall(result: GetResult, who: str) -> GetResult:
    """A stream that ended early (a connection closed mid-answer) is an error, not a success."""
    if result.missing and not result.error and not result.cancelled:
        result.error = (f"{who}: the answer ended with {result.missing} of the study's {result.expected} "
                        "instances missing (connection lost?)")
    return result


def valid_uid(uid: str) -> bool:
    return bool(uid) and len(uid) <= 64 and bool(UID_RE.match(uid))


def _str(ds, kw: str) -> str:
    v = ds.get(kw, "") if ds is not None else ""
    if isinstance(v, (list, tuple)) or v.__class__.__name__ == "MultiValue":
        return "\\".join(str(x) for x in v)
    return str(v) if v is not None else ""


def _row_from_dataset(ds) -> StudyRow:
    n = ds.get("NumberOfStudyRelatedInstances", None)
    try:
        n = int(n) if n not in (None, "") else None
    except (TypeError, ValueError):
        n = None
    return StudyRow(_str(ds, "StudyInstanceUID"), _str(ds, "PatientID"), _str(ds, "PatientName"), _str(ds, "StudyDate"),
                    _str(ds, "StudyDescription"), _str(ds, "ModalitiesInStudy"), n)


def _patient_of(dest: Path, have: set[str]) -> str | None:
    """The Patient ID of the instances already in ``dest`` (a resumed retrieval), else None."""
    import pydicom

    for uid in sorted(have)[:1]:
        try:
            return str(pydicom.dcmread(dest / f"{uid}.dcm", stop_before_pixels=True, force=True).get("PatientID", ""))
        except Exception:  # noqa: BLE001 - unreadable: the next instance sets it
            return None
    return None


def _keep(dest: Path, ds_bytes: bytes | None, ds, wanted: set[str], result: GetResult | None = None) -> tuple[str, str]:
    """Write one received instance (parsed and checked) as ``dest/<SOPInstanceUID>.dcm``;
    (uid, "") or (uid or "?", why refused).  With ``result``, an instance of another study than
    the one asked for, or of another patient than the study's other instances, is refused: a
    server's mistake (or malice) never mixes patients in a study folder."""
    import pydicom

    try:
        if ds is None:
            ds = pydicom.dcmread(io.BytesIO(ds_bytes), force=True)
        for _element in ds.iterall():  # every element decoded now: pydicom defers it to first use
            pass
        uid = str(ds.get("SOPInstanceUID", ""))
    except Exception as exc:  # noqa: BLE001 - a hostile answer is refused, not trusted
        return "?", f"not a readable DICOM object ({type(exc).__name__})"
    if not valid_uid(uid):
        return "?", "the server sent an object without a valid SOP Instance UID"
    if wanted and uid not in wanted:
        return uid, "the server sent an object that was not asked for"
    if result is not None:
        study = str(ds.get("StudyInstanceUID", ""))
        if study != result.study_uid:
            return uid, f"the object belongs to another study ({study or 'no Study Instance UID'}), not the one asked for"
        patient = str(ds.get("PatientID", ""))
        if result.patient_id is not None and patient != result.patient_id:
            return uid, "the object belongs to another patient than the study's other instances"
    short = _truncated(ds)
    if short:
        return uid, short
    need = len(ds_bytes) if ds_bytes is not None else len(ds.get("PixelData") or b"") + (1 << 16)
    try:
        free = shutil.disk_usage(dest).free
    except OSError:
        free = None
    if free is not None and free - need < DISK_RESERVE:
        if result is not None:
            result.error = (f"the disk of {dest} is full ({free / 2**20:.0f} MiB free, {DISK_RESERVE >> 20} MiB kept "
                            f"free): {result.received} instances retrieved; free some space and run the same "
                            "command again (it resumes)")
        return uid, "not stored: the disk is full"
    target = dest / f"{uid}.dcm"
    tmp = dest / f".{uid}.{os.getpid()}.part"
    try:
        if ds_bytes is not None:
            tmp.write_bytes(ds_bytes)
        else:
            if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
                return uid, "the object has no transfer syntax"
            ds.save_as(tmp, enforce_file_format=True)  # a Part 10 file: preamble and file meta
        pydicom.dcmread(tmp, force=True)  # what is kept parses
        os.chmod(tmp, 0o600)  # patient data: the user's only
        os.replace(tmp, target)
    except Exception as exc:  # noqa: BLE001
        tmp.unlink(missing_ok=True)
        return uid, f"could not be stored ({type(exc).__name__}: {exc})"
    if result is not None and result.patient_id is None:
        result.patient_id = str(ds.get("PatientID", ""))
    return uid, ""


def _truncated(ds) -> str:
    """Why the object's pixel data is shorter than its header says ("" when whole): an answer
    cut off mid-instance (a connection lost) must not be kept as if complete."""
    if "PixelData" not in ds:
        return ""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None and ts.is_compressed:
        return ""  # encapsulated: its length says nothing; decoding checks it when opened
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        need = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * frames * int(ds.BitsAllocated) // 8
    except (AttributeError, TypeError, ValueError):
        return "the image header is incomplete"
    have = len(ds.PixelData)
    return "" if have >= need else f"the pixel data was cut off ({have} of {need} bytes): retrieve again"


def _present(dest: Path) -> set[str]:
    return {p.stem for p in dest.glob("*.dcm") if valid_uid(p.stem)} if dest.is_dir() else set()


# --- DICOMweb -----------------------------------------------------------------------------------


MAX_REPLY_BYTES = 4 << 30  # one DICOMweb reply, decoded (a whole series streamed in one answer)
MAX_EXPANSION = 64  # decoded bytes per byte on the wire, past EXPANSION_FLOOR: a gzip/deflate bomb
EXPANSION_FLOOR = 16 << 20
MIN_RATE = 64 << 10  # bytes/s a reply must keep on average once it has taken longer than the timeout


class Cancelled(PacsError):
    """The user cancelled while a reply was being read."""


def _bounded(response, who: str, timeout: float, max_bytes: int, max_part: int = MAX_INSTANCE_BYTES,
             cancelled: Callable[[], bool] | None = None):
    """``response`` whose body (however it is read: ``content``, ``json()``, ``iter_content``)
    is refused with a PacsError once it is larger than ``max_bytes`` decoded, expands more than
    ``MAX_EXPANSION`` to 1 from what came over the wire (past ``EXPANSION_FLOOR``), or arrives
    slower than ``timeout`` plus ``MIN_RATE`` allows: a server that sends a byte a second, a
    compressed bomb or an endless multipart part ends in one message, within bounded memory and
    time, instead of stretching the timeout (which requests applies to each read) without end."""
    raw_iter = response.iter_content
    boundary = re.search(r'boundary="?([^";]+)"?', response.headers.get("Content-Type", "") or "")
    delimiter = b"--" + boundary.group(1).encode("latin-1") if boundary else None

    def guarded(chunk_size=1, decode_unicode=False):
        import threading

        start, state = time.monotonic(), {"total": 0, "slow": False, "part": 0, "tail": b""}
        done = threading.Event()
        slack = (chunk_size if isinstance(chunk_size, int) else 1 << 20) / MIN_RATE  # the chunk in flight

        def watchdog():  # a read blocks until its chunk is full: only another thread can end it
            while not done.wait(0.25):
                if cancelled is not None and cancelled():
                    state["cancelled"] = True
                    _abort(response)
                    return
                elapsed = time.monotonic() - start
                if elapsed > timeout + slack + state["total"] / MIN_RATE:
                    state["slow"] = True
                    _abort(response)
                    return

        threading.Thread(target=watchdog, name="pacs-read-deadline", daemon=True).start()
        try:
            try:
                for chunk in raw_iter(chunk_size, decode_unicode):
                    total = state["total"] = state["total"] + len(chunk)
                    wire = getattr(response.raw, "tell", lambda: total)() or 1
                    if total > max_bytes:
                        raise PacsError(f"{who}: a reply larger than {max_bytes / 2**30:.1f} GiB was refused")
                    if total > EXPANSION_FLOOR and total > MAX_EXPANSION * wire:
                        raise PacsError(f"{who}: a reply that expands {total / wire:.0f} to 1 when decompressed was "
                                        "refused (a compression bomb?)")
                    if delimiter is not None and isinstance(chunk, bytes):  # one multipart part = one instance
                        seen = state["tail"] + chunk
                        at = seen.rfind(delimiter)
                        state["part"] = len(seen) - at - len(delimiter) if at >= 0 else state["part"] + len(chunk)
                        state["tail"] = seen[-(len(delimiter) - 1):]
                        if state["part"] > max_part:
                            raise PacsError(f"{who}: a part of the reply (one instance) larger than "
                                            f"{max_part / 2**20:.0f} MiB was refused; raise --max-instance-mb if "
                                            "that is right")
                    if state["slow"] or state.get("cancelled"):
                        break
                    yield chunk
            except PacsError:
                _abort(response)
                raise
            except Exception:
                if not (state["slow"] or state.get("cancelled")):
                    raise
            if state.get("cancelled"):
                raise Cancelled(f"{who}: cancelled")
            if state["slow"]:
                raise PacsError(f"{who}: the server sends too slowly ({state['total']} bytes in "
                                f"{time.monotonic() - start:.0f} s); given up")
        finally:
            done.set()

    response.iter_content = guarded
    return response


def _abort(response) -> None:
    """Shut the reply's socket (unblocks a read waiting in another thread), then close it."""
    import socket

    try:
        sock = response.raw._fp.fp.raw._sock  # http.client response -> socket file -> socket
        sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # noqa: BLE001 - already closed, or another transport: close() is enough
        pass
    try:
        response.close()
    except Exception:  # noqa: BLE001
        pass


def without_credentials(url: str) -> str:
    """``url`` without a user name or password in it (``https://user:pw@host/`` -> ``https://host/``)."""
    parsed = urlparse(url)
    if parsed.username is None and parsed.password is None:
        return url
    host = parsed.netloc.rsplit("@", 1)[-1]
    return urlunparse(parsed._replace(netloc=host))


class DicomWebNode:
    def __init__(self, url: str, user: str = "", password: str = "", token: str = "", verify: bool | str = True,
                 timeout: float = 20.0, max_matches: int = MAX_MATCHES, max_instances: int = MAX_INSTANCES,
                 max_instance_bytes: int = MAX_INSTANCE_BYTES):
        self.max_matches, self.max_instances = max_matches, max_instances
        self.max_instance_bytes = max_instance_bytes
        self.max_reply_bytes = MAX_REPLY_BYTES
        self._cancelled: Callable[[], bool] | None = None  # set during get(): Cancel ends a blocked read too
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise PacsError(f"{without_credentials(url)!r} is not an http(s) URL of a DICOMweb service")
        try:
            parsed.port  # noqa: B018 - raises on a port that is not one
        except ValueError:
            raise PacsError(f"{without_credentials(url)!r}: the port is not a TCP port (1 to 65535)") from None
        if parsed.username is not None or parsed.password is not None:
            # credentials never stay in a URL: it is shown, logged and stored in the settings
            user = user or unquote(parsed.username or "")
            password = password or unquote(parsed.password or "")
            url = without_credentials(url)
        self.url, self.timeout = url.rstrip("/"), timeout
        self.verify = verify
        import requests

        self.session = requests.Session()
        self.session.verify = verify
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        elif user:
            self.session.auth = (user, password)
        from dicomweb_client.api import DICOMwebClient

        self.client = DICOMwebClient(url=self.url, session=self.session)
        self.client.set_http_retry_params(retry=False)
        self._orig_request = self.session.request
        self.session.request = self._request  # every call gets our timeout

    def _request(self, method, url, **kw):
        kw["timeout"] = self.timeout  # ours, also where dicomweb-client passes its own 20 s
        # per request: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace a session's
        # verify, which would silently undo --ca-bundle and --insecure
        kw["verify"] = self.verify
        kw["stream"] = True  # the body is read through _bounded, never inside requests
        response = self._orig_request(method, url, **kw)
        return _bounded(response, self.describe(), self.timeout, self.max_reply_bytes, self.max_instance_bytes,
                        self._cancelled)

    def describe(self) -> str:
        return f"DICOMweb {self.url}"

    def _call(self, what: str, fn, *args, **kw):
        import requests

        try:
            return fn(*args, **kw)
        except requests.exceptions.SSLError as exc:
            raise PacsError(f"{self.describe()}: the server's certificate cannot be verified ({exc.__class__.__name__}); "
                            "give its CA with --ca-bundle, or --insecure for a test server") from None
        except requests.exceptions.ConnectTimeout:
            raise PacsError(f"{self.describe()}: no answer within {self.timeout:g} s (timed out)") from None
        except requests.exceptions.ReadTimeout:
            raise PacsError(f"{self.describe()}: the server stopped answering during {what} (timed out)") from None
        except requests.exceptions.ConnectionError:
            raise PacsError(f"{self.describe()}: connection refused or lost during {what} "
                            "(is the server running, is the URL right?)") from None
        except requests.exceptions.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else 0
            if code in (401, 403):
                raise PacsError(f"{self.describe()}: the server refused our credentials (HTTP {code})") from None
            if code == 404:
                raise PacsError(f"{self.describe()}: not found (HTTP 404): is this the DICOMweb root?") from None
            raise PacsError(f"{self.describe()}: {what} failed (HTTP {code})") from None
        except (PacsError, StopIteration):
            raise
        except Exception as exc:  # noqa: BLE001 - malformed JSON, multipart or DICOM: the server's bytes
            # (found by fuzzing: a part that is not DICOM raised pydicom's InvalidDicomError)
            raise PacsError(f"{self.describe()}: the server's answer to {what} is malformed "
                            f"({type(exc).__name__}: {str(exc)[:200]})") from None

    def _json_list(self, found, what: str) -> list:
        """A QIDO answer must be a list of objects (found by fuzzing: a bare number was a TypeError)."""
        if found is None:
            return []
        if not isinstance(found, list) or not all(isinstance(x, dict) for x in found):
            raise PacsError(f"{self.describe()}: the server's answer to {what} is malformed (not a list of "
                            "DICOM JSON objects)")
        return found

    def echo(self) -> str:
        self._call("the connection check", self.client.search_for_studies, limit=1)
        return f"{self.describe()}: answers (QIDO-RS)"

    def find(self, patient_id: str = "", patient_name: str = "", study_date: str = "", modality: str = "",
             limit: int | None = None) -> list[StudyRow]:
        filters = {k: v for k, v in (("PatientID", patient_id), ("PatientName", patient_name),
                                     ("StudyDate", study_date), ("ModalitiesInStudy", modality)) if v}
        cap = min(limit, self.max_matches) if limit else self.max_matches
        found = self._json_list(self._call("the search", self.client.search_for_studies, search_filters=filters,
                                           fields=list(STUDY_FIELDS), limit=cap + 1), "the search")
        # (not get_remaining: Orthanc ignores offset, which made dicomweb-client page forever)
        if found and len(found) > self.max_matches:
            raise _too_many(self.describe(), "matches", self.max_matches, "--max-matches")
        found = found[:limit] if limit and found else found
        from pydicom.dataset import Dataset

        rows = []
        for item in found or []:
            try:
                rows.append(_row_from_dataset(Dataset.from_json(item)))
            except Exception as exc:  # noqa: BLE001 - a malformed answer
                raise PacsError(f"{self.describe()}: a malformed study in the search answer ({exc})") from None
        return [r for r in rows if valid_uid(r.study_uid)]

    def instances(self, study_uid: str) -> list[tuple[str, str]]:
        from pydicom.dataset import Dataset

        found = self._json_list(self._call("listing the study", self.client.search_for_instances,
                                           study_instance_uid=study_uid, fields=["SOPInstanceUID", "SeriesInstanceUID"],
                                           limit=self.max_instances + 1), "listing the study")
        if found and len(found) > self.max_instances:
            raise _too_many(self.describe(), "instances in the study", self.max_instances, "--max-instances")
        out = []
        for item in found or []:
            try:
                ds = Dataset.from_json(item)
                uid, series = _str(ds, "SOPInstanceUID"), _str(ds, "SeriesInstanceUID")
            except Exception as exc:  # noqa: BLE001 - a malformed answer (found by fuzzing: a number, not an object)
                raise PacsError(f"{self.describe()}: a malformed instance in the study's listing "
                                f"({type(exc).__name__})") from None
            if valid_uid(uid) and valid_uid(series):
                out.append((series, uid))
        return out

    def get(self, study_uid: str, dest: Path, progress=None, cancelled=None) -> GetResult:
        listed, todo, have, wanted, result = _begin_get(self, study_uid, dest)
        self._cancelled = cancelled
        try:
            return self._get(study_uid, dest, listed, todo, have, wanted, result, progress, cancelled)
        finally:
            self._cancelled = None

    def _get(self, study_uid, dest, listed, todo, have, wanted, result, progress, cancelled) -> GetResult:
        for series, uids, whole in plan(listed, todo):
            if cancelled and cancelled():
                result.cancelled = True
                break
            try:
                if whole:  # one streamed request for the series (most of it is missing)
                    stream = self._call("the retrieval", self.client.iter_series, study_uid, series,
                                        media_types=ANY_TRANSFER_SYNTAX)
                    items = self._stream(stream)
                else:
                    items = (self._call("the retrieval", self.client.retrieve_instance, study_uid, series, uid,
                                        media_types=ANY_TRANSFER_SYNTAX) for uid in uids)
                for ds in items:
                    _arrived(ds, dest, have, wanted, result, progress)
                    if result.error:
                        break
                    if cancelled and cancelled():
                        result.cancelled = True
                        break
            except Cancelled:
                result.cancelled = True
                break
            except PacsError as exc:
                result.error = str(exc)
                break
            if result.error:
                break
        return _shortfall(result, self.describe())

    def _stream(self, stream):
        """Datasets of a streamed answer, with the connection's faults as PacsError."""
        it = iter(stream)
        while True:
            try:
                ds = self._call("the retrieval", next, it)
            except StopIteration:
                return
            except PacsError:
                raise
            yield ds

    def store(self, paths: Sequence[str]) -> list[str]:
        import pydicom

        datasets = [pydicom.dcmread(p) for p in paths]
        self._call("the store (STOW-RS)", self.client.store_instances, datasets)
        return [str(d.SOPInstanceUID) for d in datasets]

    def has_instance(self, study_uid: str, sop_uid: str) -> bool:
        found = self._call("the check", self.client.search_for_instances, study_instance_uid=study_uid,
                           search_filters={"SOPInstanceUID": sop_uid}, fields=["SOPInstanceUID"])
        return bool(found)


# --- DIMSE ---------------------------------------------------------------------------------------


def received_c_store(raw, transfer_syntax, uid, decode: Callable, file_meta: Callable, limit: int, dest: Path,
                     have: set[str], wanted: set[str], result: GetResult, progress=None) -> int:
    """One C-STORE received during C-GET: measured before it is decoded (``_too_big``), decoded,
    checked and kept (``_arrived``), or refused with the reason; the status to answer."""
    wire = raw.getbuffer().nbytes if hasattr(raw, "getbuffer") else 0
    uid = str(uid or "?")
    why = _too_big(transfer_syntax, raw, wire, limit)
    if why:
        result.refused.append((uid, why))
        return 0xA700
    try:
        ds = decode()
        ds.file_meta = file_meta()
    except Exception as exc:  # noqa: BLE001 - a hostile data set is refused, not trusted
        result.refused.append((uid, f"not a readable DICOM object ({type(exc).__name__})"))
        return 0xC210
    _arrived(ds, dest, have, wanted, result, progress)
    return 0x0000


def _abort_dimse(assoc) -> None:
    """Abort the association and wake the thread that waits for its next DIMSE message (pynetdicom
    waits up to the DIMSE timeout for a message an aborted association will never deliver)."""
    try:
        assoc.abort()
    except Exception:  # noqa: BLE001 - already gone
        pass
    try:
        assoc.dimse.msg_queue.put((None, None))
    except Exception:  # noqa: BLE001 - another pynetdicom: the DIMSE timeout still ends the wait
        pass


def _too_big(transfer_syntax, raw, wire: int, limit: int) -> str:
    """Why a received C-STORE data set is refused before it is decoded ("" when it is not): larger
    than ``limit``, or deflated and expanding past ``limit`` or ``MAX_EXPANSION`` to 1 (past
    ``EXPANSION_FLOOR``), measured by inflating it in bounded steps, never whole."""
    import zlib

    if wire > limit:
        return f"an instance larger than {limit / 2**20:.0f} MiB was refused; raise --max-instance-mb if that is right"
    if str(transfer_syntax) != "1.2.840.10008.1.2.1.99" or not hasattr(raw, "getbuffer"):
        return ""
    cap = min(limit, max(EXPANSION_FLOOR, MAX_EXPANSION * wire))
    inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
    view = raw.getbuffer()
    try:
        for i in range(0, len(view), 1 << 16):
            data = bytes(view[i:i + (1 << 16)])
            while data:
                total += len(inflater.decompress(data, 1 << 20))
                if total > cap:
                    return (f"a deflated instance that expands to more than {cap / 2**20:.0f} MiB from "
                            f"{wire / 2**10:.0f} KiB was refused (a compression bomb?)")
                data = inflater.unconsumed_tail
    except zlib.error:
        return "a deflated instance that does not inflate was refused"
    finally:
        del view
    return ""


def parse_dimse(spec: str) -> tuple[str, str, int]:
    m = re.fullmatch(r"([^@]{1,16})@([^:]+):(\d{1,5})", spec.strip())
    if not m:
        raise PacsError(f"{spec!r} is not AET@HOST:PORT (for example ORTHANC@pacs.example.org:4242)")
    port = int(m.group(3))
    if not 1 <= port <= 65535:
        raise PacsError(f"{spec!r}: port {port} is not a TCP port (1 to 65535)")
    return m.group(1), m.group(2), port


class DimseNode:
    def __init__(self, spec: str, aet: str = DEFAULT_AET, timeout: float = 20.0, max_matches: int = MAX_MATCHES,
                 max_instances: int = MAX_INSTANCES, max_instance_bytes: int = MAX_INSTANCE_BYTES):
        self.max_matches, self.max_instances = max_matches, max_instances
        self.max_instance_bytes = max_instance_bytes
        self.called, self.host, self.port = parse_dimse(spec)
        if not aet or len(aet) > 16:
            raise PacsError(f"our AE title {aet!r} must be 1 to 16 characters")
        self.aet, self.timeout = aet, timeout

    def describe(self) -> str:
        return f"DIMSE {self.called}@{self.host}:{self.port}"

    def _assoc(self, contexts, ext=(), handlers=None):
        import socket

        from pynetdicom import AE

        try:  # tell "nobody listens" and "silent" apart from a refused association
            socket.create_connection((self.host, self.port), timeout=self.timeout).close()
        except socket.timeout:
            raise PacsError(f"{self.describe()}: no answer within {self.timeout:g} s (timed out)") from None
        except OSError as exc:
            raise PacsError(f"{self.describe()}: connection refused ({exc.strerror or exc}): is the server running "
                            "on that host and port?") from None

        ae = AE(ae_title=self.aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = self.timeout
        for c in contexts:
            ae.add_requested_context(*c) if isinstance(c, tuple) else ae.add_requested_context(c)
        assoc = ae.associate(self.host, self.port, ae_title=self.called, ext_neg=list(ext), evt_handlers=handlers or [])
        if assoc.is_established:
            return assoc
        if assoc.is_rejected:
            raise PacsError(f"{self.describe()}: the association was rejected: is {self.called!r} the server's AE title, "
                            f"and does it know our AE title {self.aet!r}?")
        if assoc.is_aborted:
            raise PacsError(f"{self.describe()}: the server aborted the association (wrong AE title or not allowed)")
        raise PacsError(f"{self.describe()}: connection refused or timed out (is the server running on that port?)")

    def echo(self) -> str:
        from pynetdicom.sop_class import Verification

        assoc = self._assoc([Verification])
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        if not status or status.Status != 0:
            raise PacsError(f"{self.describe()}: C-ECHO failed")
        return f"{self.describe()}: answers (C-ECHO as {self.aet})"

    def _find(self, query, cap: int, what: str, flag: str) -> list:
        """C-FIND's matches; more than ``cap`` ends the association (abort) and is refused."""
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

        assoc = self._assoc([StudyRootQueryRetrieveInformationModelFind])
        out = []
        try:
            for status, ident in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                if status is None:
                    raise PacsError(f"{self.describe()}: the connection was lost during C-FIND")
                if status.Status in (0xFF00, 0xFF01) and ident is not None:
                    out.append(ident)
                    if len(out) > cap:
                        assoc.abort()
                        raise _too_many(self.describe(), what, cap, flag)
                elif status.Status not in (0x0000, 0xFF00, 0xFF01):
                    raise PacsError(f"{self.describe()}: C-FIND failed (status 0x{status.Status:04X})")
        finally:
            if assoc.is_established:
                assoc.release()
        return out

    def find(self, patient_id: str = "", patient_name: str = "", study_date: str = "", modality: str = "",
             limit: int | None = None) -> list[StudyRow]:
        from pydicom.dataset import Dataset

        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        for kw in STUDY_FIELDS:
            setattr(q, kw, "")
        q.PatientID, q.PatientName, q.StudyDate, q.ModalitiesInStudy = patient_id, patient_name, study_date, modality
        rows = [r for r in (_row_from_dataset(d) for d in self._find(q, self.max_matches, "matches", "--max-matches"))
                if valid_uid(r.study_uid)]
        return rows[:limit] if limit else rows

    def instances(self, study_uid: str) -> list[tuple[str, str]]:
        from pydicom.dataset import Dataset

        q = Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.StudyInstanceUID, q.SeriesInstanceUID, q.SOPInstanceUID = study_uid, "", ""
        out = []
        for d in self._find(q, self.max_instances, "instances in the study", "--max-instances"):
            s, u = _str(d, "SeriesInstanceUID"), _str(d, "SOPInstanceUID")
            if valid_uid(s) and valid_uid(u):
                out.append((s, u))
        return out

    def get(self, study_uid: str, dest: Path, progress=None, cancelled=None) -> GetResult:
        from pydicom.dataset import Dataset
        from pynetdicom import build_role, evt
        from pynetdicom.presentation import StoragePresentationContexts
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

        listed, todo, have, wanted, result = _begin_get(self, study_uid, dest)
        state = {"bytes": 0, "start": time.monotonic(), "stop": None}

        def on_store(event):
            if result.error or result.cancelled or state["stop"]:
                return 0xA700  # out of resources: the retrieval is ending
            raw = event.request.DataSet
            state["bytes"] += raw.getbuffer().nbytes if hasattr(raw, "getbuffer") else 0
            return received_c_store(raw, event.context.transfer_syntax, event.request.AffectedSOPInstanceUID,
                                    lambda: event.dataset, lambda: event.file_meta, self.max_instance_bytes,
                                    dest, have, wanted, result, progress)

        contexts = [StudyRootQueryRetrieveInformationModelGet]
        storage = [c.abstract_syntax for c in StoragePresentationContexts][:127]
        roles = [build_role(uid, scp_role=True) for uid in storage]
        if not todo:
            return result
        assoc = self._assoc(contexts + storage, ext=roles, handlers=[(evt.EVT_C_STORE, on_store)])
        done = threading.Event()
        current = {"msg_id": 0}

        def watch():
            """Cancel within 2 s (C-CANCEL, then abort after 1 s), and a deadline a slow server
            cannot stretch: each C-GET may take the timeout plus the bytes received at MIN_RATE."""
            while not done.wait(0.1):
                if cancelled and cancelled() or result.error:
                    state["stop"] = "cancel" if not result.error else "error"
                    try:
                        assoc.send_c_cancel(current["msg_id"], query_model=StudyRootQueryRetrieveInformationModelGet)
                    except Exception:  # noqa: BLE001 - the association may be gone already
                        pass
                    if not done.wait(1.0):
                        _abort_dimse(assoc)
                    return
                if time.monotonic() - state["start"] > self.timeout + state["bytes"] / MIN_RATE:
                    state["stop"] = "slow"
                    _abort_dimse(assoc)
                    return

        watcher = threading.Thread(target=watch, name="pacs-dimse-watch", daemon=True)
        watcher.start()
        try:
            requests = []
            for series, uids, whole in plan(listed, todo):
                requests += [(series, None)] if whole else [(series, u) for u in uids]
            for msg_id, (series, uid) in enumerate(requests, start=1):
                if cancelled and cancelled():
                    result.cancelled = True
                    break
                q = Dataset()
                q.QueryRetrieveLevel = "SERIES" if uid is None else "IMAGE"
                q.StudyInstanceUID, q.SeriesInstanceUID = study_uid, series
                if uid is not None:
                    q.SOPInstanceUID = uid
                current["msg_id"], state["start"], state["bytes"] = msg_id, time.monotonic(), 0
                for status, _ident in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet, msg_id=msg_id):
                    if status is None:
                        break
                if state["stop"] or result.error or not assoc.is_established:
                    break
        finally:
            done.set()
            watcher.join(timeout=2)
            if assoc.is_established:
                assoc.release()
        if state["stop"] == "cancel":
            result.cancelled = True
        elif state["stop"] == "slow":
            result.error = (f"{self.describe()}: the server sends too slowly (a C-GET took longer than "
                            f"{self.timeout:g} s plus {MIN_RATE >> 10} KiB/s); given up")
        elif not result.error and not result.cancelled and not assoc.is_established and result.missing:
            result.error = f"{self.describe()}: the connection was lost during C-GET"
        return _shortfall(result, self.describe())

    def store(self, paths: Sequence[str]) -> list[str]:
        import pydicom

        datasets = [pydicom.dcmread(p) for p in paths]
        contexts = sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets})
        assoc = self._assoc([(c, [t]) for c, t in contexts])
        try:
            for d in datasets:
                status = assoc.send_c_store(d)
                if not status or status.Status not in (0x0000, 0xB000, 0xB007, 0xB006):
                    raise PacsError(f"{self.describe()}: C-STORE of {d.SOPInstanceUID} failed"
                                    + (f" (status 0x{status.Status:04X})" if status else " (connection lost)"))
        finally:
            if assoc.is_established:
                assoc.release()
        return [str(d.SOPInstanceUID) for d in datasets]

    def has_instance(self, study_uid: str, sop_uid: str) -> bool:
        return any(u == sop_uid for _s, u in self.instances(study_uid))


def node_from_args(dicomweb: str | None = None, dimse: str | None = None, aet: str = DEFAULT_AET,
                   user: str = "", password: str = "", token: str = "", insecure: bool = False,
                   ca_bundle: str | None = None, timeout: float = 20.0, max_matches: int = MAX_MATCHES,
                   max_instances: int = MAX_INSTANCES, max_instance_bytes: int = MAX_INSTANCE_BYTES):
    if bool(dicomweb) == bool(dimse):
        raise PacsError("give exactly one node: --dicomweb URL or --dimse AET@HOST:PORT")
    if max_matches < 1 or max_instances < 1 or max_instance_bytes < 1:
        raise PacsError("--max-matches, --max-instances and --max-instance-mb must be at least 1")
    if dicomweb:
        verify: bool | str = ca_bundle if ca_bundle else not insecure
        return DicomWebNode(dicomweb, user, password, token, verify, timeout, max_matches, max_instances,
                            max_instance_bytes)
    return DimseNode(dimse, aet, timeout, max_matches, max_instances, max_instance_bytes)


def timed(fn: Callable, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0
