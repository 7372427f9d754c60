"""Helpers for the GUI tests: synthetic CT series on disk, mouse and drag-and-drop
events sent straight to widgets (deterministic under QT_QPA_PLATFORM=offscreen)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from tests.synthetic import chest_hu

PATIENT_NAME = "Synthetic^Patient"


def write_ct_series(folder: Path, n: int = 12, size: int = 64, spacing: float = 2.5, seed: int = 7,
                    window: tuple[float, float] = (40.0, 400.0), patient: str = PATIENT_NAME,
                    patient_id: str = "SYN-001") -> list[float]:
    """``n`` CT slices of one series in ``folder``: one SeriesInstanceUID, distinct
    ImagePositionPatient z, InstanceNumber and file names both shuffled (neither gives
    the anatomical order).  Returns the z positions in the order the viewer must show."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    numbers = list(range(1, n + 1))
    rng.shuffle(numbers)
    names = [f"IM{k:04d}.dcm" for k in rng.sample(range(1000, 9999), n)]
    study_uid, series_uid = generate_uid(), generate_uid()
    zs = [-100.0 + spacing * k for k in range(n)]
    for k in rng.sample(range(n), n):  # written in a shuffled order too
        uid = generate_uid()
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.Modality, ds.PatientName, ds.PatientID = "CT", patient, patient_id
        ds.StudyDate, ds.StudyTime, ds.SeriesNumber = "20240102", "101500", 3
        ds.SeriesDescription = "Synthetic chest"
        ds.InstanceNumber = numbers[k]
        ds.ImagePositionPatient = [-22.4, -22.4, zs[k]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = spacing
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.WindowCenter, ds.WindowWidth = window
        hu = chest_hu(size, lesion=k % 2 == 1, seed=seed * 100 + k)
        ds.PixelData = np.clip(np.rint(hu), -1024, 3000).astype("<i2").tobytes()
        ds.save_as(folder / names[k], enforce_file_format=True)
    return zs


def send_mouse(widget, kind: str, pos, button=None, buttons=None, modifiers=None) -> None:
    """A QMouseEvent ("press", "move", "release", "dblclick") at ``pos`` (widget coordinates) sent to ``widget``."""
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    types = {"press": QEvent.Type.MouseButtonPress, "move": QEvent.Type.MouseMove,
             "release": QEvent.Type.MouseButtonRelease, "dblclick": QEvent.Type.MouseButtonDblClick}
    local = QPointF(pos)
    glob = QPointF(widget.mapToGlobal(local))
    button = Qt.MouseButton.NoButton if button is None else button
    buttons = Qt.MouseButton.NoButton if buttons is None else buttons
    modifiers = Qt.KeyboardModifier.NoModifier if modifiers is None else modifiers
    QApplication.sendEvent(widget, QMouseEvent(types[kind], local, glob, button, buttons, modifiers))


def double_click(widget, pos) -> None:
    """A left double click as Qt 6 delivers it: press, release, press, double-click, release.

    (QTest.mouseDClick's events do not make a QAbstractItemView emit ``doubleClicked`` offscreen.)"""
    from PySide6.QtCore import Qt

    left = Qt.MouseButton.LeftButton
    for kind in ("press", "release", "press", "dblclick", "release"):
        send_mouse(widget, kind, pos, left, Qt.MouseButton.NoButton if kind == "release" else left)


def send_wheel(widget, dy: int, modifiers=None) -> None:
    """One wheel event of ``dy`` eighths of a degree (120 = one notch; positive = away from the user)."""
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    centre = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre)), QPoint(0, 0), QPoint(0, dy),
                        Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier if modifiers is None else modifiers,
                        Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def drop_files(widget, paths) -> tuple[bool, bool]:
    """Drag ``paths`` onto ``widget`` and drop them; (enter accepted, drop accepted)."""
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent
    from PySide6.QtWidgets import QApplication

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QPointF(widget.width() // 2, widget.height() // 2)
    enter = QDragEnterEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    drop = QDropEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    return enter.isAccepted(), drop.isAccepted()


def isolate_settings(tmp_path, monkeypatch):
    """QSettings, the history and the log in this test's own folders (QSettings.setPath is
    process-wide, so it is set again for every test); returns the config folder."""
    from PySide6.QtCore import QSettings

    from ctviewer.gui.app import configure_settings

    config = tmp_path / "config"
    monkeypatch.setenv("CTVIEWER_CONFIG_DIR", str(config))
    monkeypatch.setenv("CTVIEWER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CTVIEWER_LOG_DIR", str(tmp_path / "log"))
    configure_settings()
    settings = QSettings()
    settings.clear()
    settings.sync()
    return config
