"""Opening files: dialogs, recent files, drag and drop, and the background load.

A mixin of ``MainWindow``: it uses the window's settings, pool and state."""

from __future__ import annotations

import logging
import os
from collections import Counter

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox

from ctviewer.paths import samples_dir

from .workers import Opened, OpenTask

RECENT_MAX = 10


class OpeningMixin:
    def open_paths(self, paths: list[str], select: tuple[str, int | None] | None = None) -> None:
        paths = [os.fspath(p) for p in paths]
        missing = [(p, "no such file or folder") for p in paths if not os.path.exists(p)]
        paths = [p for p in paths if os.path.exists(p)]
        if not paths:
            if missing:
                self._report_refused(missing)
            self.opened.emit(0, len(missing))
            return
        self._open_token += 1
        token = self._open_token
        self._select_after_open = select
        self.statusBar().showMessage(f"Opening {', '.join(os.path.basename(p.rstrip(os.sep)) or p for p in paths)}…")
        task = OpenTask(paths)
        task.signals.finished.connect(lambda result, t=token, m=missing: self._on_opened(result, t, m))
        self._start(task)
        for p in paths:
            self._add_recent(p)
        self.settings.setValue("files/last_folder", os.path.dirname(os.path.abspath(paths[0])))

    def _on_opened(self, result: Opened, token: int, missing: list[tuple[str, str]] = ()) -> None:
        if token != self._open_token:
            return  # a newer open request superseded this one
        self.statusBar().clearMessage()
        refused = [*missing, *((e.path, e.reason) for e in result.errors)]
        logging.getLogger("ctviewer.gui").info(
            "opened %d series (%d slices); %d files refused: %s", len(result.series),
            sum(len(s) for s in result.series), len(refused), dict(Counter(r for _p, r in refused)))
        if refused:
            self._report_refused(refused)
        if not result.series:
            self.opened.emit(0, len(refused))
            return
        self.worker.discard_pending()
        self.series, self.hashes = result.series, result.hashes
        self.reasons, self.fractions = result.reasons, result.fractions
        self.series_panel.set_series(self.series)
        self.current = (-1, -1)
        si, index = 0, self.lung_slice(0)
        if self._select_after_open:
            path, frame = self._select_after_open
            for i, ser in enumerate(self.series):
                for j, s in enumerate(ser.slices):
                    if os.path.samefile(s.path, path) and s.frame == frame:
                        si, index = i, j
        self.show_slice(si, index)
        self.opened.emit(len(self.series), len(refused))

    def lung_slice(self, si: int) -> int:
        """Where series ``si`` opens: the judged slice with the most lung (a slice through the
        lungs, not the first file, which is often the neck or the abdomen); 0 when none."""
        ser = self.series[si]
        best = max(((self.fractions.get(s, 0.0), -j) for j, s in enumerate(ser.slices) if not self.reason_for(si, j)),
                    default=None)
        return -best[1] if best else 0

    def _report_refused(self, items: list[tuple[str, str]]) -> None:
        self.last_refused = items
        lines = [f"{os.path.basename(p) or p}: {reason}" for p, reason in items]
        box = QMessageBox(QMessageBox.Icon.Warning, "Some files were not opened",
                          f"{len(items)} file(s) could not be opened; the rest is shown.", parent=self)
        box.setInformativeText("\n".join(lines[:12]) + ("\n…" if len(lines) > 12 else ""))
        box.setDetailedText("\n".join(f"{p}: {r}" for p, r in items))
        box.setModal(False)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.show()
        self.refused_box = box

    def _dialog_dir(self) -> str:
        return str(self.settings.value("files/last_folder", os.path.expanduser("~")))

    def open_files_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Open slices", self._dialog_dir(),
                                                "CT slices (*.dcm *.dicom *.ima *.png *.jpg *.jpeg);;All files (*)")
        if files:
            self.open_paths(files)

    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open folder", self._dialog_dir())
        if folder:
            self.open_paths([folder])

    def open_dicomdir_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open DICOMDIR", self._dialog_dir(), "DICOMDIR (DICOMDIR DIRFILE);;All files (*)")
        if path:
            self.open_paths([path])

    def open_samples(self) -> None:
        self.open_paths([str(samples_dir())])

    def reopen(self, path: str, frame) -> None:
        self.open_paths([path], select=(path, frame))

    def _add_recent(self, path: str) -> None:
        recent = [p for p in self.recent_files() if p != os.path.abspath(path)]
        self.settings.setValue("files/recent", [os.path.abspath(path), *recent][:RECENT_MAX])
        self.rebuild_recent()

    def recent_files(self) -> list[str]:
        value = self.settings.value("files/recent", [])
        return [value] if isinstance(value, str) else list(value or [])

    def rebuild_recent(self) -> None:
        self.recent_menu.clear()
        for p in self.recent_files():
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _c=False, path=p: self.open_paths([path]))
        self.recent_menu.setEnabled(bool(self.recent_files()))

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt API
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.open_paths(paths)
            event.acceptProposedAction()
