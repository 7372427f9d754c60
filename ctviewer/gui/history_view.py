"""The history table: every stored prediction, sortable and filterable.

``HistoryTableModel`` (QAbstractTableModel) holds the entries read from
``ctviewer.history.History``; ``HistoryFilter`` (QSortFilterProxyModel) filters
by label, date range and free text; ``HistoryPanel`` adds the controls, CSV
export, clearing with confirmation, and re-opening a slice on double-click.
"""

from __future__ import annotations

import os

from PySide6.QtCore import QDate, QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDateEdit,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ctviewer.history import History, HistoryEntry

from .tables import RowsTableModel

COLUMNS = ("Time (UTC)", "File", "Frame", "Label", "p(COVID)", "Model", "SOP Instance UID", "Pixel hash")


class HistoryTableModel(RowsTableModel):
    columns = COLUMNS

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[HistoryEntry] = []

    def set_entries(self, entries: list[HistoryEntry]) -> None:
        self.beginResetModel()
        self.rows = list(entries)
        self.endResetModel()

    def prepend(self, entry: HistoryEntry) -> None:
        self.beginInsertRows(QModelIndex(), 0, 0)
        self.rows.insert(0, entry)
        self.endInsertRows()

    def entry(self, row: int) -> HistoryEntry:
        return self.rows[row]

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        e = self.rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (
                e.time.replace("T", " ").rstrip("Z"),
                os.path.basename(e.path),
                "" if e.frame is None else str(e.frame + 1),
                e.label if e.judged else f"not judged: {e.reason}",
                "" if e.p_covid is None else f"{e.p_covid:.3f}",
                e.model,
                e.sop_instance_uid,
                e.pixel_sha256,
            )[col]
        if role == Qt.ItemDataRole.ToolTipRole and col == 1:
            return e.path
        if role == Qt.ItemDataRole.UserRole:  # sort keys
            return (e.time, e.path, -1 if e.frame is None else e.frame, e.label or e.reason,
                    -1.0 if e.p_covid is None else e.p_covid, e.model,
                    e.sop_instance_uid, e.pixel_sha256)[col]
        return None


class HistoryFilter(QSortFilterProxyModel):
    """Label, date range (inclusive, UTC dates) and free-text filters."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setSortRole(Qt.ItemDataRole.UserRole)
        self._label = ""
        self._text = ""
        self._from: str | None = None
        self._to: str | None = None

    def set_filters(self, label: str = "", text: str = "", date_from: QDate | None = None, date_to: QDate | None = None):
        self._label = label
        self._text = text.strip().lower()
        self._from = date_from.toString("yyyy-MM-dd") if date_from else None
        self._to = date_to.toString("yyyy-MM-dd") if date_to else None
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.9; invalidateFilter is deprecated there
            self.beginFilterChange()
            self.endFilterChange()
        else:
            self.invalidateFilter()

    def filterAcceptsRow(self, row, parent) -> bool:  # noqa: N802
        e = self.sourceModel().entry(row)
        day = e.time[:10]
        if self._label and (e.label if e.judged else "Not judged") != self._label:
            return False
        if self._from and day < self._from:
            return False
        if self._to and day > self._to:
            return False
        if self._text:
            hay = f"{e.path} {e.label} {e.model} {e.sop_instance_uid} {e.pixel_sha256}".lower()
            return self._text in hay
        return True


class HistoryPanel(QWidget):
    reopenRequested = Signal(str, object)  # path, frame (0-based or None)

    def __init__(self, history: History | None, parent=None):
        super().__init__(parent)
        self.history = history
        self.model = HistoryTableModel(self)
        self.proxy = HistoryFilter(self)
        self.proxy.setSourceModel(self.model)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(0, Qt.SortOrder.DescendingOrder)
        self.view.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.view.verticalHeader().setVisible(False)
        self.view.verticalHeader().setDefaultSectionSize(self.view.fontMetrics().height() + 6)
        self.view.setWordWrap(False)
        self.view.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.view.doubleClicked.connect(self._reopen)

        self.label = QComboBox()
        self.label.addItems(["All labels", "COVID", "non-COVID", "Not judged"])
        self.text = QLineEdit()
        self.text.setPlaceholderText("Search file, model, UID…")
        self.text.setClearButtonEnabled(True)
        self.date_on = QComboBox()
        self.date_on.addItems(["Any date", "Between"])
        self.date_from = QDateEdit(QDate.currentDate().addDays(-7))
        self.date_to = QDateEdit(QDate.currentDate())
        for d in (self.date_from, self.date_to):
            d.setCalendarPopup(True)
            d.setDisplayFormat("yyyy-MM-dd")
            d.dateChanged.connect(self._apply)
        self.label.currentIndexChanged.connect(self._apply)
        self.text.textChanged.connect(self._apply)
        self.date_on.currentIndexChanged.connect(self._apply)
        self.export = QPushButton("Export CSV…")
        self.export.clicked.connect(self.export_csv)
        self.anonymise = QCheckBox("Anonymise")
        self.anonymise.setToolTip("File names become pseudonyms and UIDs are replaced (DICOM PS3.15 Basic Profile)")
        self.clear_button = QPushButton("Clear…")
        self.clear_button.clicked.connect(self.confirm_clear)
        self.count = QLabel("")

        top = QHBoxLayout()
        for w in (self.label, self.text, self.date_on, self.date_from, QLabel("to"), self.date_to):
            top.addWidget(w)
        bottom = QHBoxLayout()
        bottom.addWidget(self.count, 1)
        bottom.addWidget(self.anonymise)
        bottom.addWidget(self.export)
        bottom.addWidget(self.clear_button)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.view)
        lay.addLayout(bottom)
        self.reload()
        self._apply()

    def reload(self) -> None:
        self.model.set_entries(self.history.entries() if self.history else [])
        self._update_count()

    def add(self, entry: HistoryEntry) -> None:
        self.model.prepend(entry)
        self._update_count()

    def _apply(self, *_):
        between = self.date_on.currentIndex() == 1
        self.date_from.setEnabled(between)
        self.date_to.setEnabled(between)
        label = self.label.currentText() if self.label.currentIndex() > 0 else ""
        self.proxy.set_filters(label, self.text.text(), self.date_from.date() if between else None,
                               self.date_to.date() if between else None)
        self._update_count()

    def _update_count(self) -> None:
        self.count.setText(f"{self.proxy.rowCount()} of {self.model.rowCount()} predictions")

    def visible_entries(self) -> list[HistoryEntry]:
        return [self.model.entry(self.proxy.mapToSource(self.proxy.index(r, 0)).row()) for r in range(self.proxy.rowCount())]

    def _reopen(self, index) -> None:
        e = self.model.entry(self.proxy.mapToSource(index).row())
        if not os.path.exists(e.path):
            QMessageBox.information(self, "CT Viewer", f"{e.path}\nno longer exists.")
            return
        self.reopenRequested.emit(e.path, e.frame)

    def export_csv(self, dest: str | None = None) -> int:
        if self.history is None:
            return 0
        if not dest:
            dest, _ = QFileDialog.getSaveFileName(self, "Export history", "ctviewer-history.csv", "CSV (*.csv)")
            if not dest:
                return 0
        try:
            return self.history.export_csv(dest, self.visible_entries(), anonymize=self.anonymise.isChecked())
        except OSError as exc:
            QMessageBox.warning(self, "CT Viewer", f"Could not write {dest}: {exc.strerror or exc}")
            return 0

    def confirm_clear(self) -> bool:
        if self.history is None:
            return False
        answer = QMessageBox.question(
            self, "Clear history", f"Delete all {self.model.rowCount()} stored predictions? This cannot be undone."
        )
        if answer != QMessageBox.StandardButton.Yes:
            return False
        self.history.clear()
        self.reload()
        return True
