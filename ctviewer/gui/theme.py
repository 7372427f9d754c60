"""The window's colour theme ("system", "light", "dark"): set at start-up (``app.run``) and from
the View menu (``main_window``); its own module so that neither imports the other."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication


def apply_theme(name: str) -> None:
    """"system" follows the platform; "light" and "dark" use Fusion with a fixed palette."""
    app = QApplication.instance()
    hints = QGuiApplication.styleHints()
    scheme = {"light": Qt.ColorScheme.Light, "dark": Qt.ColorScheme.Dark}.get(name, Qt.ColorScheme.Unknown)
    if hasattr(hints, "setColorScheme"):
        hints.setColorScheme(scheme)
    if name == "system":
        app.setPalette(app.style().standardPalette())
        return
    app.setStyle("Fusion")
    pal = app.style().standardPalette()
    if name == "dark":
        colours = {
            QPalette.ColorRole.Window: "#2b2b2b", QPalette.ColorRole.WindowText: "#e6e6e6",
            QPalette.ColorRole.Base: "#1e1e1e", QPalette.ColorRole.AlternateBase: "#2f2f2f",
            QPalette.ColorRole.Text: "#e6e6e6", QPalette.ColorRole.Button: "#353535",
            QPalette.ColorRole.ButtonText: "#e6e6e6", QPalette.ColorRole.Highlight: "#2d6ca2",
            QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.ToolTipBase: "#353535",
            QPalette.ColorRole.ToolTipText: "#e6e6e6", QPalette.ColorRole.PlaceholderText: "#8a8a8a",
        }
        for role, colour in colours.items():
            pal.setColor(role, QColor(colour))
    app.setPalette(pal)
