"""The image viewer: one slice, windowed, with zoom, pan, window/level drag,
corner annotations and an optional heatmap overlay.

A plain QWidget that paints a QImage through one transform (scale, then
offset): simpler than a QGraphicsView and exact about which image pixel is
under the cursor.  Display windowing here never touches what the model sees
(the model's window is a model-card parameter applied in ``imaging``).

Mouse: wheel scrolls slices (``scrolled``), Ctrl+wheel zooms about the cursor,
left or middle drag pans, right drag changes window (horizontal: width,
vertical: level).  Hovering reports the value under the cursor (HU for DICOM,
grey level for PNG/JPEG) through ``hovered``.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPalette
from PySide6.QtWidgets import QWidget

from ctviewer.imaging import Slice, apply_window
from ctviewer.imaging.window import jet_rgb

ZOOM_STEP = 1.25
MIN_SCALE, MAX_SCALE = 0.05, 40.0


def gray_qimage(img8: np.ndarray) -> QImage:
    """A deep-copied Grayscale8 QImage of a 2-D uint8 array."""
    a = np.ascontiguousarray(img8, dtype=np.uint8)
    h, w = a.shape
    return QImage(a.data, w, h, a.strides[0], QImage.Format.Format_Grayscale8).copy()


def heatmap_qimage(cam: np.ndarray, opacity: float) -> QImage:
    """A jet-coloured RGBA image of ``cam`` (0..1); alpha grows with the value,
    so regions that did not contribute stay transparent."""
    c = np.clip(np.nan_to_num(np.asarray(cam, dtype=np.float32)), 0.0, 1.0)
    rgb = jet_rgb(np.rint(c * 255).astype(np.uint8))
    alpha = np.rint(np.clip(c * 1.5, 0.0, 1.0) * 255 * float(np.clip(opacity, 0.0, 1.0))).astype(np.uint8)
    rgba = np.ascontiguousarray(np.dstack([rgb, alpha]))
    h, w = c.shape
    return QImage(rgba.data, w, h, rgba.strides[0], QImage.Format.Format_RGBA8888).copy()


class SliceView(QWidget):
    scrolled = Signal(int)  # +1 next slice, -1 previous
    hovered = Signal(str)  # text for the status bar: position and value under the cursor
    windowChanged = Signal(float, float)  # center, width after a right drag

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumSize(200, 200)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAutoFillBackground(True)
        pal = self.palette()
        pal.setColor(QPalette.ColorRole.Window, QColor("black"))
        self.setPalette(pal)
        self._slice: Slice | None = None
        self._image: QImage | None = None
        self._center, self._width = 127.5, 255.0
        self._scale, self._offset, self._fit = 1.0, QPointF(0, 0), True
        self._cam: np.ndarray | None = None
        self._overlay: QImage | None = None
        self._opacity = 0.5
        self._show_overlay = False
        self._annotations: dict[str, list[str]] = {}
        self._show_annotations = True
        self._placeholder = "Open files or a folder (Ctrl+O, Ctrl+Shift+O), or drop them here"
        self._drag: tuple[Qt.MouseButton, QPointF, float, float] | None = None

    # --- content -----------------------------------------------------------
    def slice(self) -> Slice | None:
        return self._slice

    def window(self) -> tuple[float, float]:
        return self._center, self._width

    def set_slice(self, s: Slice | None, center: float, width: float) -> None:
        same_shape = self._slice is not None and s is not None and self._slice.shape == s.shape
        self._slice = s
        self._cam, self._overlay = None, None
        self._center, self._width = float(center), max(1.0, float(width))
        self._render()
        if not same_shape:
            self._fit = True
        self._refit()
        self.update()

    def set_window(self, center: float, width: float) -> None:
        self._center, self._width = float(center), max(1.0, float(width))
        self._render()
        self.update()

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self.update()

    def set_annotations(self, corners: dict[str, list[str]]) -> None:
        self._annotations = corners
        self.update()

    def set_annotations_visible(self, on: bool) -> None:
        self._show_annotations = on
        self.update()

    def set_heatmap(self, cam: np.ndarray | None) -> None:
        """The Grad-CAM map in slice pixel coordinates (same shape as the slice), or None."""
        if cam is not None and self._slice is not None and cam.shape != self._slice.shape:
            raise ValueError(f"heatmap shape {cam.shape} does not match the slice {self._slice.shape}")
        self._cam = cam
        self._overlay = heatmap_qimage(cam, self._opacity) if cam is not None else None
        self.update()

    def has_heatmap(self) -> bool:
        return self._cam is not None

    def set_heatmap_visible(self, on: bool) -> None:
        self._show_overlay = on
        self.update()

    def set_heatmap_opacity(self, opacity: float) -> None:
        self._opacity = float(opacity)
        if self._cam is not None:
            self._overlay = heatmap_qimage(self._cam, self._opacity)
        self.update()

    def _render(self) -> None:
        s = self._slice
        if s is None:
            self._image = None
            return
        img = apply_window(s.pixels, self._center, self._width, invert=s.invert)
        self._image = gray_qimage(img)

    # --- geometry ----------------------------------------------------------
    def scale(self) -> float:
        return self._scale

    def fit(self) -> None:
        self._fit = True
        self._refit()
        self.update()

    def zoom(self, factor: float, anchor: QPointF | None = None) -> None:
        if self._image is None:
            return
        anchor = anchor if anchor is not None else QPointF(self.width() / 2, self.height() / 2)
        new = float(np.clip(self._scale * factor, MIN_SCALE, MAX_SCALE))
        image_pt = (anchor - self._offset) / self._scale
        self._scale = new
        self._offset = anchor - image_pt * new
        self._fit = False
        self.update()

    def pan(self, dx: float, dy: float) -> None:
        self._offset += QPointF(dx, dy)
        self._fit = False
        self.update()

    def _refit(self) -> None:
        if self._image is None or not self._fit:
            return
        w, h = self._image.width(), self._image.height()
        self._scale = min(self.width() / w, self.height() / h)
        self._offset = QPointF((self.width() - w * self._scale) / 2, (self.height() - h * self._scale) / 2)

    def image_point(self, widget_pt: QPointF) -> tuple[int, int] | None:
        """The slice pixel (column, row) under a widget point, or None outside the image."""
        if self._image is None:
            return None
        p = (widget_pt - self._offset) / self._scale
        x, y = int(np.floor(p.x())), int(np.floor(p.y()))
        if 0 <= x < self._image.width() and 0 <= y < self._image.height():
            return x, y
        return None

    def value_text(self, x: int, y: int) -> str:
        s = self._slice
        if s is None:
            return ""
        v = float(s.pixels[y, x])
        what = f"HU {v:.0f}" if s.is_hu else f"value {v:.0f}"
        return f"x {x}  y {y}  {what}"

    # --- events ------------------------------------------------------------
    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self._refit()
        super().resizeEvent(event)

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("black"))
        if self._image is None:
            p.setPen(QColor(200, 200, 200))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self._placeholder)
            return
        p.save()
        p.translate(self._offset)
        p.scale(self._scale, self._scale)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self._scale < 1.0)
        p.drawImage(0, 0, self._image)
        if self._show_overlay and self._overlay is not None:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            p.drawImage(QRectF(0, 0, self._image.width(), self._image.height()), self._overlay)
        p.restore()
        if self._show_annotations:
            self._paint_annotations(p)

    def _paint_annotations(self, p: QPainter) -> None:
        font = QFont(self.font())
        font.setPointSizeF(max(8.0, font.pointSizeF()))
        p.setFont(font)
        fm = p.fontMetrics()
        line, margin = fm.height(), 6
        for corner, lines in self._annotations.items():
            lines = [t for t in lines if t]
            right = corner.endswith("right")
            top = corner.startswith("top")
            for i, text in enumerate(lines):
                y = margin + fm.ascent() + i * line if top else self.height() - margin - (len(lines) - 1 - i) * line - fm.descent()
                x = self.width() - margin - fm.horizontalAdvance(text) if right else margin
                p.setPen(QColor(0, 0, 0))
                p.drawText(x + 1, y + 1, text)
                p.setPen(QColor(235, 235, 160))
                p.drawText(x, y, text)

    def wheelEvent(self, event) -> None:  # noqa: N802
        steps = event.angleDelta().y() / 120.0
        if steps == 0:
            return
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.zoom(ZOOM_STEP**steps, event.position())
        else:
            self.scrolled.emit(-1 if steps > 0 else 1)
        event.accept()

    def mousePressEvent(self, event) -> None:  # noqa: N802
        self._drag = (event.button(), event.position(), self._center, self._width)
        event.accept()

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        self._drag = None

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        pt = event.position()
        if self._drag is not None:
            button, start, c0, w0 = self._drag
            delta = pt - start
            if button in (Qt.MouseButton.LeftButton, Qt.MouseButton.MiddleButton):
                self.pan(delta.x(), delta.y())
                self._drag = (button, pt, c0, w0)
            elif button == Qt.MouseButton.RightButton and self._slice is not None:
                k = max(0.25, w0 / 256.0)  # one screen pixel moves about one grey level
                self.set_window(c0 + delta.y() * k, max(1.0, w0 + delta.x() * k))
                self.windowChanged.emit(self._center, self._width)
        hit = self.image_point(pt)
        self.hovered.emit(self.value_text(*hit) if hit else "")
