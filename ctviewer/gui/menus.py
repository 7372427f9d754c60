"""Menus, toolbar and keyboard shortcuts of the main window."""

from __future__ import annotations

from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMessageBox

from .viewer import ZOOM_STEP

PRESET_KEYS = (("lung", "1"), ("mediastinum", "2"), ("bone", "3"), ("file", "4"))
SHORTCUTS = (
    ("Ctrl+O / Ctrl+Shift+O / Ctrl+D", "Open files / folder / DICOMDIR"),
    ("Ctrl+B", "Batch review of studies"),
    ("Ctrl+Shift+P", "Open a study from the hospital's PACS"),
    ("Up, Down, mouse wheel", "Previous / next slice"),
    ("Page Up / Page Down", "10 slices back / forward"),
    ("Home / End", "First / last slice"),
    ("Ctrl+wheel, + / −", "Zoom"),
    ("F", "Fit to window"),
    ("Left or middle drag", "Pan"),
    ("Right drag", "Window (horizontal) and level (vertical)"),
    ("1 / 2 / 3 / 4", "Lung / mediastinum / bone / the file's own window"),
    ("H", "Heatmap overlay on/off"),
    ("I", "Hide identifying text"),
    ("F1", "This list"),
)


def add_action(win, text: str, slot, shortcut=None, checkable=False, menu=None) -> QAction:
    """An action on the window (so its shortcut works whatever has focus), optionally in a menu."""
    act = QAction(text, win)
    if shortcut:
        act.setShortcuts([QKeySequence(s) for s in (shortcut if isinstance(shortcut, list) else [shortcut])])
    act.setCheckable(checkable)
    act.triggered.connect(slot)
    win.addAction(act)  # shortcuts work with the menu bar hidden too
    if menu is not None:
        menu.addAction(act)
    return act


def build_menus(win) -> None:
    """File, View (presets, zoom, heatmap, identifying text, theme, docks), Model and Help; the toolbar."""
    win.make_action = lambda *a, **k: add_action(win, *a, **k)
    mb = win.menuBar()
    f = mb.addMenu("&File")
    win.make_action("Open &files…", win.open_files_dialog, "Ctrl+O", menu=f)
    win.make_action("Open f&older…", win.open_folder_dialog, "Ctrl+Shift+O", menu=f)
    win.make_action("Open &DICOMDIR…", win.open_dicomdir_dialog, "Ctrl+D", menu=f)
    win.recent_menu = f.addMenu("Open &recent")
    win.make_action("Open the &sample slices", win.open_samples, menu=f)
    win.make_action("&Batch review…", lambda: win.open_batch_review(), "Ctrl+B", menu=f)
    win.make_action("Open from &PACS…", lambda: win.open_pacs(), "Ctrl+Shift+P", menu=f)
    f.addSeparator()
    win.make_action("E&xport history as CSV…", lambda: win.history_panel.export_csv(), menu=f)
    f.addSeparator()
    win.make_action("&Quit", win.close, QKeySequence.StandardKey.Quit, menu=f)

    v = mb.addMenu("&View")
    tb = win.addToolBar("Window presets")
    tb.setObjectName("presets")
    group = QActionGroup(win)
    win.preset_actions = {}
    for name, key in PRESET_KEYS:
        title = "File's own" if name == "file" else name.capitalize()
        act = win.make_action(title, lambda _c=False, n=name: win.set_preset(n), key, checkable=True, menu=v)
        act.setToolTip(f"{title} window ({key})")
        group.addAction(act)
        tb.addAction(act)
        win.preset_actions[name] = act
    if win.preset in win.preset_actions:
        win.preset_actions[win.preset].setChecked(True)
    v.addSeparator()
    win.make_action("Zoom &in", lambda: win.viewer.zoom(ZOOM_STEP), ["+", "="], menu=v)
    win.make_action("Zoom &out", lambda: win.viewer.zoom(1 / ZOOM_STEP), "-", menu=v)
    win.make_action("&Fit to window", win.viewer.fit, "F", menu=v)
    tb.addSeparator()
    win.heatmap_action = win.make_action("&Heatmap", lambda on: win.set_heatmap(on), "H", checkable=True, menu=v)
    tb.addAction(win.heatmap_action)
    win.anon_action = win.make_action("Hide &identifying text", win.set_hide_identifying, "I", checkable=True, menu=v)
    win.anon_action.setChecked(win.settings.value("view/hide_identifying", False, type=bool))
    tb.addAction(win.anon_action)
    win.annot_action = win.make_action("Corner &annotations", win.viewer.set_annotations_visible, checkable=True, menu=v)
    win.annot_action.setChecked(True)
    theme = v.addMenu("&Theme")
    tgroup = QActionGroup(win)
    current_theme = win.settings.value("view/theme", "system")
    for name in ("system", "light", "dark"):
        act = win.make_action(name.capitalize() if name != "system" else "Follow the system",
                           lambda _c=False, n=name: win.set_theme(n), checkable=True, menu=theme)
        act.setChecked(name == current_theme)
        tgroup.addAction(act)
    v.addSeparator()
    for dock in (win.series_dock, win.tags_dock, win.prediction_dock, win.history_dock):
        v.addAction(dock.toggleViewAction())
    nav = (("Previous slice", lambda: win.step(-1), ["Up", "Left"]), ("Next slice", lambda: win.step(1), ["Down", "Right"]),
           ("Back 10", lambda: win.step(-10), "PgUp"), ("Forward 10", lambda: win.step(10), "PgDown"),
           ("First slice", lambda: win.step(-10**6), "Home"), ("Last slice", lambda: win.step(10**6), "End"))
    for text, slot, key in nav:
        win.make_action(text, slot, key)

    m = mb.addMenu("&Model")
    win.about_model_action = win.make_action("&About the model…", win.show_model_card, menu=m)
    h = mb.addMenu("&Help")
    win.make_action("&Keyboard shortcuts", lambda: show_shortcuts(win), "F1", menu=h)
    win.make_action("&About CT Viewer", lambda: show_about(win), menu=h)
    win.rebuild_recent()


def show_shortcuts(win) -> None:
    rows = "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in SHORTCUTS)
    QMessageBox.information(win, "Keyboard shortcuts", f"<table cellpadding='3'>{rows}</table>")


def show_about(win) -> None:
    from ctviewer import __version__

    QMessageBox.about(win, "About CT Viewer",
                      f"<b>CT Viewer {__version__}</b><p>Chest CT slices with an AI second opinion.</p>"
                      "<p>Research use only, not for diagnosis.</p>")
