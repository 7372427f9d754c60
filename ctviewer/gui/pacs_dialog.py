"""File → Open from PACS… (issue 14): nodes kept in the settings (passwords in the system
keyring, never in the settings file or the log), a search form, the studies found, and the
retrieval of a study into the private cache (``ctviewer.pacs.cache``) on a worker thread with
progress and cancel; the study then opens in the viewer or in batch review.  Network work runs
on QThreadPool tasks; the window only receives queued signals, so a slow PACS never freezes it.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QSettings, Qt, QThreadPool, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from .workers import emit_queued

log = logging.getLogger("ctviewer.gui")
KEYRING_SERVICE = "CT Viewer PACS"
_session_passwords: dict[str, str] = {}  # when no system keyring exists: this session only


def load_nodes(settings: QSettings) -> list[dict]:
    try:
        nodes = json.loads(str(settings.value("pacs/nodes", "[]")))
        return [n for n in nodes if isinstance(n, dict) and n.get("name") and n.get("address")]
    except (TypeError, ValueError):
        return []


def save_nodes(settings: QSettings, nodes: list[dict]) -> None:
    """The nodes without secrets: a user name typed into a URL moves to ``user``, a password
    there is dropped (passwords live in the system keyring only)."""
    from urllib.parse import unquote, urlparse

    from ctviewer.pacs.client import without_credentials

    clean = []
    for n in nodes:
        c = {k: n.get(k, "") for k in ("name", "kind", "address", "aet", "user", "insecure")}
        url = str(c["address"])
        if c["kind"] == "dicomweb" and without_credentials(url) != url:
            c["user"] = c["user"] or unquote(urlparse(url).username or "")
            c["address"] = without_credentials(url)
        clean.append(c)
    settings.setValue("pacs/nodes", json.dumps(clean))


def get_password(name: str) -> str:
    try:
        import keyring

        # what was typed in this session first: the keyring may still hold an old password
        return _session_passwords.get(name) or keyring.get_password(KEYRING_SERVICE, name) or ""
    except Exception:  # noqa: BLE001 - no keyring backend on this system
        return _session_passwords.get(name, "")


def set_password(name: str, password: str) -> bool:
    """Store in the system keyring; False (kept for this session only) when there is none."""
    _session_passwords[name] = password
    try:
        import keyring

        keyring.set_password(KEYRING_SERVICE, name, password)
        return True
    except Exception:  # noqa: BLE001
        return False


def make_node(n: dict, timeout: float = 20.0, password: str | None = None):
    """The node of a settings entry; ``password``: what the user typed (else the keyring's)."""
    from ctviewer.pacs import DicomWebNode, DimseNode

    if n.get("kind") == "dimse":
        return DimseNode(n["address"], n.get("aet") or "CTVIEWER", timeout)
    if password is None:
        password = get_password(n["name"]) if n.get("user") else ""
    return DicomWebNode(n["address"], n.get("user", ""), password, verify=not n.get("insecure"), timeout=timeout)


class _Signals(QObject):
    found = Signal(object)  # list[StudyRow]
    progress = Signal(int, int)
    done = Signal(object)  # GetResult / list of UIDs sent
    failed = Signal(str)


class PacsTask(QRunnable):
    """One network job (find, get or store) off the GUI thread."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.signals = _Signals()
        self.cancel = threading.Event()

    def run(self) -> None:
        from ctviewer.pacs import PacsError

        try:
            out = self.fn(self)
        except PacsError as exc:
            emit_queued(self.signals.failed, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a bug or a hostile answer: a message, not a crash
            emit_queued(self.signals.failed, f"{type(exc).__name__}: {exc}")
            return
        emit_queued(self.signals.done, out)


class PacsDialog(QDialog):
    studyReady = Signal(str, str)  # folder, "viewer" | "batch"
    searched = Signal(int)
    retrieved = Signal(object)  # GetResult
    failed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Open from PACS")
        self.settings = QSettings()
        self.nodes = load_nodes(self.settings)
        self.task: PacsTask | None = None
        self._tasks: set = set()

        self.node_box = QComboBox()
        self.kind = QComboBox()
        self.kind.addItems(["DICOMweb", "DIMSE"])
        self.name = QLineEdit()
        self.address = QLineEdit()
        self.address.setPlaceholderText("https://pacs/dicom-web  or  AET@host:port")
        self.aet = QLineEdit("CTVIEWER")
        self.user = QLineEdit()
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.insecure = QCheckBox("Do not verify the certificate (test servers)")
        self.save_button = QPushButton("Save node")
        self.save_button.clicked.connect(self.save_node)
        self.echo_button = QPushButton("Test connection")
        self.echo_button.clicked.connect(self.echo)
        self.node_box.currentIndexChanged.connect(self._show_node)

        self.patient_id, self.patient_name = QLineEdit(), QLineEdit()
        self.study_date, self.modality = QLineEdit(), QLineEdit("CT")
        self.patient_name.setPlaceholderText("DOE^J*")
        self.study_date.setPlaceholderText("YYYYMMDD or YYYYMMDD-YYYYMMDD")
        self.search_button = QPushButton("Search")
        self.search_button.setDefault(True)
        self.search_button.clicked.connect(self.search)
        self.table = QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels(["Patient ID", "Name", "Date", "Description", "Modalities", "Images"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.open_button = QPushButton("Retrieve and open")
        self.batch_button = QPushButton("Retrieve for batch review")
        self.open_button.clicked.connect(lambda: self.retrieve("viewer"))
        self.batch_button.clicked.connect(lambda: self.retrieve("batch"))
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.rows = []

        node_form = QFormLayout()
        node_form.addRow("Node", self.node_box)
        node_form.addRow("Name", self.name)
        node_form.addRow("Protocol", self.kind)
        node_form.addRow("Address", self.address)
        node_form.addRow("Our AE title", self.aet)
        node_form.addRow("User", self.user)
        node_form.addRow("Password", self.password)
        node_form.addRow("", self.insecure)
        nb = QHBoxLayout()
        nb.addWidget(self.save_button)
        nb.addWidget(self.echo_button)
        node_form.addRow("", nb)
        search = QFormLayout()
        search.addRow("Patient ID", self.patient_id)
        search.addRow("Patient name", self.patient_name)
        search.addRow("Study date", self.study_date)
        search.addRow("Modality", self.modality)
        search.addRow("", self.search_button)
        top = QHBoxLayout()
        top.addLayout(node_form, 1)
        top.addLayout(search, 1)
        actions = QHBoxLayout()
        actions.addWidget(self.progress, 1)
        actions.addWidget(self.cancel_button)
        actions.addWidget(self.open_button)
        actions.addWidget(self.batch_button)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.table, 1)
        lay.addLayout(actions)
        lay.addWidget(self.status)
        self.resize(980, 620)
        self._fill_nodes()
        self._busy(False)

    # --- nodes -----------------------------------------------------------------------------
    def _fill_nodes(self, select: str = "") -> None:
        self.node_box.blockSignals(True)
        self.node_box.clear()
        self.node_box.addItems([n["name"] for n in self.nodes] + ["New node…"])
        names = [n["name"] for n in self.nodes]
        self.node_box.setCurrentIndex(names.index(select) if select in names else 0)
        self.node_box.blockSignals(False)
        self._show_node()

    def _show_node(self) -> None:
        i = self.node_box.currentIndex()
        n = self.nodes[i] if 0 <= i < len(self.nodes) else {}
        self.name.setText(n.get("name", ""))
        self.kind.setCurrentIndex(1 if n.get("kind") == "dimse" else 0)
        self.address.setText(n.get("address", ""))
        self.aet.setText(n.get("aet", "") or "CTVIEWER")
        self.user.setText(n.get("user", ""))
        self.password.setText(get_password(n["name"]) if n.get("user") else "")
        self.insecure.setChecked(bool(n.get("insecure")))

    def current_node(self) -> dict:
        return {"name": self.name.text().strip() or self.address.text().strip(),
                "kind": "dimse" if self.kind.currentIndex() == 1 else "dicomweb",
                "address": self.address.text().strip(), "aet": self.aet.text().strip() or "CTVIEWER",
                "user": self.user.text().strip(), "insecure": self.insecure.isChecked()}

    def save_node(self) -> None:
        n = self.current_node()
        if not n["address"]:
            self.status.setText("Give the node's address first.")
            return
        self.nodes = [m for m in self.nodes if m["name"] != n["name"]] + [n]
        save_nodes(self.settings, self.nodes)
        where = ""
        if n["user"]:
            where = (" Its password is in the system keyring." if set_password(n["name"], self.password.text())
                     else " No system keyring here: the password is kept for this session only.")
        self._fill_nodes(n["name"])
        self.status.setText(f"Saved node {n['name']}.{where}")
        log.info("PACS node saved (%s)", n["kind"])  # never the address's credentials

    # --- work ------------------------------------------------------------------------------
    def _busy(self, busy: bool) -> None:
        for w in (self.search_button, self.echo_button, self.open_button, self.batch_button, self.save_button):
            w.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        if not busy:
            self.open_button.setEnabled(bool(self.table.selectedItems()) or self.table.rowCount() > 0)
            self.batch_button.setEnabled(self.open_button.isEnabled())

    def _start(self, fn, done, progress=None) -> PacsTask | None:
        n = self.current_node()
        if not n["address"]:
            self.status.setText("Choose or enter a node first.")
            return None
        typed = self.password.text() if n["user"] else ""
        if n["user"]:
            _session_passwords[n["name"]] = typed
        task = PacsTask(lambda t: fn(make_node(n, password=typed), t))  # the password typed now, never the old one
        task.signals.done.connect(done)
        task.signals.failed.connect(self._on_failed)
        if progress:
            task.signals.progress.connect(progress)
        for sig in (task.signals.done, task.signals.failed):
            sig.connect(lambda *_a, t=task: (self._tasks.discard(t), self._busy(False)))
        self._tasks.add(task)
        self.task = task
        task.setAutoDelete(False)
        self._busy(True)
        QThreadPool.globalInstance().start(task)
        return task

    def _on_failed(self, message: str) -> None:
        self.status.setText(message)
        self.failed.emit(message)

    def echo(self) -> None:
        self.status.setText("Testing the connection…")
        self._start(lambda node, t: node.echo(), lambda text: self.status.setText(str(text)))

    def search(self) -> None:
        self.status.setText("Searching…")
        q = (self.patient_id.text().strip(), self.patient_name.text().strip(), self.study_date.text().strip(),
             self.modality.text().strip())
        self._start(lambda node, t: node.find(*q), self._on_found)

    def _on_found(self, rows) -> None:
        self.rows = list(rows)
        self.table.setRowCount(len(self.rows))
        for i, r in enumerate(self.rows):
            for j, v in enumerate((r.patient_id, r.patient_name, r.date, r.description, r.modalities,
                                   "" if r.instances is None else str(r.instances))):
                self.table.setItem(i, j, QTableWidgetItem(v))
        if self.rows:
            self.table.selectRow(0)
        self.status.setText(f"{len(self.rows)} studies found.")
        self._busy(False)
        self.searched.emit(len(self.rows))

    def retrieve(self, where: str) -> None:
        row = self.table.currentRow()
        if not (0 <= row < len(self.rows)):
            self.status.setText("Select a study first.")
            return
        from ctviewer.pacs import cache as pacs_cache

        study = self.rows[row].study_uid
        n = self.current_node()
        dest = pacs_cache.study_dir(n["address"], study)
        self.progress.setRange(0, max(1, self.rows[row].instances or 1))
        self.progress.setValue(0)
        self.status.setText("Retrieving…")

        def job(node, task):
            return node.get(study, dest, progress=lambda d, t: emit_queued(task.signals.progress, d, t),
                            cancelled=task.cancel.is_set)

        def done(result) -> None:
            limit = int(float(self.settings.value("pacs/cache_gb", 5)) * 1024**3)
            pacs_cache.evict(limit, keep=(dest,))
            missing = f", {result.missing} missing" if result.missing else ""
            self.status.setText(f"{result.received} images received, {result.already} already here{missing}"
                                + (f". {result.error}: retrieve again to complete it" if result.error else "")
                                + (" (cancelled)" if result.cancelled else ""))
            self.retrieved.emit(result)
            if result.received + result.already > 0 and not result.cancelled:
                self.studyReady.emit(str(dest), where)

        self._start(job, done, lambda d, t: (self.progress.setRange(0, max(1, t)), self.progress.setValue(d)))

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel.set()
            self.status.setText("Cancelling…")

    def closeEvent(self, event) -> None:  # noqa: N802
        self.cancel()
        super().closeEvent(event)


def send_paths(node_dict: dict, paths: list[str]):
    """For batch review's "Send SR to PACS": store and confirm (runs on a worker)."""
    import pydicom

    node = make_node(node_dict)
    uids = node.store(paths)
    for p, uid in zip(paths, uids):
        if not node.has_instance(str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID), uid):
            from ctviewer.pacs import PacsError

            raise PacsError(f"{Path(p).name} was sent but {node.describe()} does not list it")
    return uids
