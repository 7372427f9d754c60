"""Side panels: the model's opinion, the study verdict, the series list, the DICOM tag browser."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont, QLinearGradient, QPainter
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ctviewer.imaging import Series
from ctviewer.imaging.window import jet_rgb


class ColorLegend(QWidget):
    """The heatmap's colour scale: low (transparent blue) to high (red) contribution."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(34)
        ramp = jet_rgb(np.linspace(0, 255, 11).astype(np.uint8))
        self._stops = [QColor(int(r), int(g), int(b)) for r, g, b in ramp]

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        bar = self.rect().adjusted(2, 2, -2, -18)
        grad = QLinearGradient(bar.left(), 0, bar.right(), 0)
        for i, c in enumerate(self._stops):
            grad.setColorAt(i / (len(self._stops) - 1), c)
        p.fillRect(bar, grad)
        p.setPen(self.palette().text().color())
        y = self.height() - 4
        p.drawText(2, y, "low")
        p.drawText(self.width() // 2 - 40, y, "contribution")
        p.drawText(self.width() - p.fontMetrics().horizontalAdvance("high") - 2, y, "high")


class ProbabilityStrip(QWidget):
    """p(COVID) along the slices of a series, head (first slice) on the left: one bar per slice,
    its height p(COVID), red at or above the threshold, blue below; a short grey tick for a slice
    not judged (no lung, not axial); nothing yet for a slice not yet scored.  The slice on
    screen is outlined.  A click selects that slice (``clicked(index)``)."""

    clicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(56)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.values: list[tuple[float | None, bool]] = []  # (p, judged) per slice; judged with p None: pending
        self.current = -1
        self.threshold = 0.5
        self.setToolTip("p(COVID) along the slices (head on the left); click to go to a slice")

    def set_values(self, values, current: int, threshold: float) -> None:
        self.values, self.current, self.threshold = list(values), current, threshold
        self.update()

    def index_at(self, x: float) -> int:
        n = len(self.values)
        return max(0, min(n - 1, int(x / max(1, self.width()) * n))) if n else -1

    def mousePressEvent(self, event) -> None:  # noqa: N802
        i = self.index_at(event.position().x())
        if i >= 0:
            self.clicked.emit(i)

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        r = self.rect().adjusted(0, 2, -1, -2)
        p.fillRect(r, self.palette().base())
        n = len(self.values)
        if not n:
            return
        w = r.width() / n
        h = r.height()
        for i, (prob, judged) in enumerate(self.values):
            x = r.left() + i * w
            if not judged:
                p.fillRect(int(x), r.bottom() - 3, max(1, int(w) - 1), 3, QColor("#9e9e9e"))
                continue
            if prob is None:
                continue
            colour = QColor("#d62728") if prob >= self.threshold else QColor("#1f77b4")
            bar = max(2, int(round(prob * h)))
            p.fillRect(int(x), r.bottom() - bar + 1, max(1, int(w) - 1), bar, colour)
        p.setPen(QColor("#555555"))
        y = r.bottom() - int(round(self.threshold * h))
        p.drawLine(r.left(), y, r.right(), y)
        if 0 <= self.current < n:
            p.setPen(QColor("#ff9900"))
            x = r.left() + self.current * w
            p.drawRect(int(x), r.top(), max(2, int(w)), h - 1)


class StudyPanel(QWidget):
    """The study verdict for the open study, with the same rule as batch review
    (``verdict.study_verdict`` over the gated slices), the number of lung slices judged, and
    the p(COVID) strip of the series on screen."""

    sliceClicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.title = QLabel("No study")
        f = QFont(self.title.font())
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() * 1.3)
        self.title.setFont(f)
        self.counts = QLabel("")
        self.counts.setWordWrap(True)
        self.rule = QLabel("")
        self.rule.setWordWrap(True)
        self.rule.setStyleSheet("color: gray")
        self.strip = ProbabilityStrip()
        self.strip.clicked.connect(self.sliceClicked)
        lay = QVBoxLayout(self)
        lay.addWidget(self.title)
        lay.addWidget(self.counts)
        lay.addWidget(self.strip)
        lay.addWidget(self.rule)
        lay.addStretch(1)

    def show_verdict(self, verdict, pending: int, n_series: int) -> None:
        """``verdict``: a ``studies.Verdict`` over the slices scored so far; ``pending``: slices of
        the study not scored yet (the verdict is provisional until 0)."""
        colours = {"COVID": "#c0392b", "non-COVID": "#2e86c1"}
        self.title.setStyleSheet(f"color: {colours.get(verdict.label, 'gray')}")
        if verdict.label in ("COVID", "non-COVID", "uncertain"):
            self.title.setText(f"Study: {verdict.label}, confidence {verdict.confidence:.0%}")
        else:
            self.title.setText(f"Study: {verdict.label}")
        series = f" in {n_series} series" if n_series > 1 else ""
        self.counts.setText(
            f"{verdict.n_lung} lung slices judged{series}, {verdict.n_positive} called COVID; "
            f"{verdict.n_excluded} not judged (no lung, not axial), {verdict.n_refused} refused"
            + (f"; {pending} slices still being scored (provisional)" if pending else ""))
        self.rule.setText(verdict.rule)

    def clear(self, text: str) -> None:
        self.title.setText(text)
        self.title.setStyleSheet("")
        self.counts.setText("")
        self.rule.setText("")
        self.strip.set_values([], -1, 0.5)


class PredictionPanel(QWidget):
    """Label, p(COVID) as a bar, confidence, threshold, model; heatmap controls."""

    aboutRequested = Signal()
    heatmapToggled = Signal(bool)
    opacityChanged = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.where = QLabel("")  # which slice the label belongs to
        self.where.setWordWrap(True)
        self.where.setStyleSheet("color: gray")
        self.label = QLabel("—")
        f = QFont(self.label.font())
        f.setPointSizeF(f.pointSizeF() * 1.8)
        f.setBold(True)
        self.label.setFont(f)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(True)
        self.bar.setFormat("p(COVID) —")
        self.detail = QLabel("")
        self.detail.setWordWrap(True)
        self.model = QLabel("Model: loading…")
        self.model.setWordWrap(True)
        self.about = QPushButton("About the model…")
        self.about.clicked.connect(self.aboutRequested)
        self.heatmap = QCheckBox("Heatmap (H)")
        self.heatmap.toggled.connect(self.heatmapToggled)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.opacity.valueChanged.connect(lambda v: self.opacityChanged.emit(v / 100.0))
        self.heatmap_state = QLabel("")
        self.heatmap_state.setWordWrap(True)
        self.legend = ColorLegend()
        note = QLabel("Research use only, not for diagnosis.")
        note.setWordWrap(True)
        note.setStyleSheet("color: gray")

        lay = QVBoxLayout(self)
        lay.addWidget(self.where)
        lay.addWidget(self.label)
        lay.addWidget(self.bar)
        lay.addWidget(self.detail)
        lay.addSpacing(8)
        lay.addWidget(self.heatmap)
        form = QFormLayout()
        form.addRow("Opacity", self.opacity)
        lay.addLayout(form)
        lay.addWidget(self.legend)
        lay.addWidget(self.heatmap_state)
        lay.addSpacing(8)
        lay.addWidget(self.model)
        lay.addWidget(self.about)
        lay.addWidget(note)
        lay.addStretch(1)
        self.clear("No slice")

    def set_model(self, title: str | None, threshold: float | None = None, error: str = "",
                  transfer: str = "") -> None:
        """``transfer``: the card's ``transfer_note()``, how the model did at hospitals it never trained
        on: the confidence above is calibrated where it trained, and a user elsewhere must know."""
        self._threshold = threshold
        if error:
            self.model.setText(f"Model unavailable: {error}")
        elif title is None:
            self.model.setText("Model: loading…")
        else:
            self.model.setText(f"Model: {title}\nDecision threshold: p(COVID) ≥ {threshold:.2f}"
                               + (f"\n{transfer}" if transfer else ""))
        self.about.setEnabled(title is not None)

    def set_where(self, text: str) -> None:
        self.where.setText(text)

    def clear(self, text: str) -> None:
        self.label.setText("—")
        self.label.setStyleSheet("")
        self.bar.setValue(0)
        self.bar.setFormat("p(COVID) —")
        self.detail.setText(text)

    def show_prediction(self, label: str, p: float, threshold: float) -> None:
        positive = p >= threshold
        self.label.setText(label)
        self.label.setStyleSheet("color: #c0392b" if positive else "color: #2e86c1")
        self.bar.setValue(int(round(p * 1000)))
        self.bar.setFormat(f"p(COVID) {p:.2f}")
        confidence = p if positive else 1.0 - p
        self.detail.setText(
            f"Calibrated confidence in “{label}”: {confidence:.0%}.\n"
            f"Slices are called COVID at p(COVID) ≥ {threshold:.2f}."
        )

    def prediction_text(self) -> str:
        return self.label.text()


class SeriesPanel(QListWidget):
    """The open series; selecting one shows it."""

    seriesSelected = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.currentRowChanged.connect(lambda row: row >= 0 and self.seriesSelected.emit(row))

    def set_series(self, series: list[Series]) -> None:
        self.blockSignals(True)
        self.clear()
        for s in series:
            item = QListWidgetItem(s.label)
            first = s.slices[0]
            item.setToolTip(f"{first.path}\n{len(s)} slice(s)\n{s.uid}")
            self.addItem(item)
        self.blockSignals(False)

    def select(self, row: int) -> None:
        self.blockSignals(True)
        self.setCurrentRow(row)
        self.blockSignals(False)


class TagPanel(QWidget):
    """Searchable DICOM tags of the slice on screen (headers only, read on demand)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter tags (name, keyword, tag or value)")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._filter)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Tag", "Name", "VR", "Value"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.message = QLabel("")
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.search)
        lay.addLayout(row)
        lay.addWidget(self.table)
        lay.addWidget(self.message)
        self._path: str | None = None
        self._hide = False

    def show_file(self, path: str | None, hide_identifying: bool = False) -> None:
        if path == self._path and hide_identifying == self._hide:
            return
        self._path, self._hide = path, hide_identifying
        self.table.setRowCount(0)
        self.message.setText("")
        if path is None:
            return
        from ctviewer.imaging import ImagingError
        from ctviewer.imaging.tags import read_tags

        try:
            rows = read_tags(path)
        except ImagingError as exc:
            self.message.setText(str(exc))
            return
        if not rows:
            self.message.setText("Not a DICOM file: no tags.")
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            value = "(hidden)" if hide_identifying and r.identifying else r.value
            items = [r.tag, "  " * r.depth + (r.name or r.keyword), r.vr, value]
            for j, text in enumerate(items):
                item = QTableWidgetItem(text)
                if j == 3:
                    item.setToolTip(text)
                item.setData(Qt.ItemDataRole.UserRole, f"{r.tag} {r.keyword} {r.name} {value}".lower())
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        self._filter(self.search.text())

    def _filter(self, text: str) -> None:
        needle = text.strip().lower()
        for i in range(self.table.rowCount()):
            hay = self.table.item(i, 0).data(Qt.ItemDataRole.UserRole)
            self.table.setRowHidden(i, bool(needle) and needle not in hay)

    def visible_rows(self) -> int:
        return sum(not self.table.isRowHidden(i) for i in range(self.table.rowCount()))
