"""Issue 14: File → Open from PACS… and batch review's "Send SR to PACS…", with pytest-qt,
against the same real Orthanc server as tests/test_pacs.py."""

from __future__ import annotations

import os
import stat

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pydicom  # noqa: E402
import pytest  # noqa: E402

WAIT_MS = 60_000
from .orthanc import PASSWORD, USER, Orthanc, orthanc_or_skip  # noqa: E402
from .test_pacs import sources, studies_of  # noqa: E402,F401


class MemoryKeyring:
    """A system keyring stand-in (the test machine has none)."""

    def __new__(cls):
        import keyring.backend

        class _K(keyring.backend.KeyringBackend):
            priority = 1
            store: dict = {}

            def get_password(self, service, user):
                return self.store.get((service, user))

            def set_password(self, service, user, password):
                self.store[(service, user)] = password

            def delete_password(self, service, user):
                self.store.pop((service, user), None)

        return _K()


@pytest.fixture(scope="module")
def server(tmp_path_factory, sources):  # noqa: F811
    orthanc_or_skip()
    s = Orthanc(tmp_path_factory.mktemp("orthanc-gui"))
    s.upload(sources)
    yield s
    s.stop()


@pytest.fixture()
def env(tmp_path, monkeypatch):
    import keyring

    kr = MemoryKeyring()
    keyring.set_keyring(kr)
    monkeypatch.setenv("CTVIEWER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CTVIEWER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CTVIEWER_CONFIG_DIR", str(tmp_path / "config"))
    from PySide6.QtCore import QSettings

    from ctviewer.gui.app import configure_settings

    configure_settings()
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "config"))
    return kr


def test_open_from_pacs_finds_retrieves_and_opens(qtbot, server, sources, env, tmp_path):  # noqa: F811
    from ctviewer.gui.main_window import MainWindow

    win = MainWindow(load_model=False)
    qtbot.addWidget(win)
    dlg = win.open_pacs()
    dlg.name.setText("test orthanc")
    dlg.kind.setCurrentIndex(0)
    dlg.address.setText(server.url)
    dlg.user.setText(USER)
    dlg.password.setText(PASSWORD)
    dlg.save_node()
    # the node is in the settings, its password only in the keyring
    dlg.settings.sync()
    ini = "".join(p.read_text() for p in (tmp_path / "config").rglob("*.ini"))
    assert server.url in ini and PASSWORD not in ini
    assert env.store[("CT Viewer PACS", "test orthanc")] == PASSWORD
    with qtbot.waitSignal(dlg.searched, timeout=WAIT_MS) as found:
        dlg.search_button.click()
    by_study = studies_of(sources)
    assert found.args == [len(by_study)] and dlg.table.rowCount() == len(by_study)
    dlg.table.selectRow(0)
    study = dlg.rows[0].study_uid
    with qtbot.waitSignal(win.opened, timeout=WAIT_MS):
        dlg.open_button.click()
    folder = tmp_path / "cache"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    got = list(folder.rglob("*.dcm"))
    assert len(got) == len(by_study[study])
    assert all(stat.S_IMODE(d.stat().st_mode) == 0o700 for d in {g.parent for g in got})
    assert sum(len(s) for s in win.series) == len(by_study[study])
    # a new dialog finds the saved node and its password again
    from ctviewer.gui.pacs_dialog import PacsDialog

    again = PacsDialog()
    qtbot.addWidget(again)
    assert again.address.text() == server.url and again.password.text() == PASSWORD


def test_faults_are_shown_not_raised(qtbot, server, env):
    from ctviewer.gui.pacs_dialog import PacsDialog

    dlg = PacsDialog()
    qtbot.addWidget(dlg)
    dlg.address.setText(server.url)
    dlg.user.setText(USER)
    dlg.password.setText("wrong")
    with qtbot.waitSignal(dlg.failed, timeout=WAIT_MS) as failed:
        dlg.search_button.click()
    assert "refused our credentials" in failed.args[0] and "refused" in dlg.status.text()
    assert dlg.search_button.isEnabled()  # the dialog is usable again


def test_cache_eviction_oldest_first(tmp_path, monkeypatch):
    from ctviewer.pacs import cache as pacs_cache

    monkeypatch.setenv("CTVIEWER_CACHE_DIR", str(tmp_path / "c"))
    dirs = []
    for i in range(3):
        d = pacs_cache.study_dir("http://x", f"1.2.{i}")
        (d / "a.dcm").write_bytes(b"x" * 1000)
        os.utime(d, (1000 + i, 1000 + i))
        dirs.append(d)
    removed = pacs_cache.evict(limit_bytes=1500, keep=(dirs[0],))
    assert removed == [dirs[1], dirs[2]] and dirs[0].exists()  # oldest first, never the one in use


def test_batch_review_sends_the_sr(qtbot, server, sources, env, tmp_path):  # noqa: F811
    from ctviewer.gui.batch_view import BatchWindow
    from ctviewer.pacs import DicomWebNode
    from ctviewer.studies import scan
    from ctviewer.studies import SliceResult, StudyResult

    by_study = studies_of(sources)
    study_uid = min(by_study, key=lambda u: len(by_study[u]))
    patients, _ = scan([str(p) for p in by_study[study_uid]])
    patient = patients[0]
    study = patient.studies[0]
    slices = [SliceResult(str(f), sop_instance_uid=str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID),
                          series_uid=study.series[0].uid, p_covid=0.2, label="non-COVID") for f in by_study[study_uid]]
    from ctviewer.studies import study_verdict

    result = StudyResult(study, patient, slices, study_verdict(slices), "m 1", "0" * 64)
    win = BatchWindow(None, None)
    qtbot.addWidget(win)
    win.results, win.shown_job = {0: result}, 0
    node = {"name": "t", "kind": "dimse", "address": server.dimse, "aet": "CTVIEWER"}
    with qtbot.waitSignal(win.sent, timeout=WAIT_MS) as sent:
        assert win.send_sr(node)
    assert sent.args == [""]
    web = DicomWebNode(server.url, USER, PASSWORD)
    study_row = next(r for r in web.find() if r.study_uid == study_uid)
    assert "SR" in study_row.modalities.split("\\")  # the SR landed in the images' study
    # a stopped server: reported, and the button can be used again
    server.stop()
    try:
        with qtbot.waitSignal(win.sent, timeout=WAIT_MS) as sent:
            assert win.send_sr({**node})
        assert "refused" in sent.args[0]
    finally:
        server.start()


def test_saved_nodes_keep_no_credentials(env, tmp_path):
    """Issue 22: a URL typed with user:password@ is stored without them (the user name moves to
    its field; passwords live in the keyring only), and the settings file holds no secret."""
    from PySide6.QtCore import QSettings

    from ctviewer.gui.pacs_dialog import load_nodes, save_nodes

    settings = QSettings()
    save_nodes(settings, [{"name": "web", "kind": "dicomweb", "address": "https://carol:pa55word@pacs.example.org/dw",
                           "user": ""},
                          {"name": "dimse", "kind": "dimse", "address": "ORTHANC@pacs.example.org:4242", "aet": "CTV"}])
    settings.sync()
    nodes = {n["name"]: n for n in load_nodes(settings)}
    assert nodes["web"]["address"] == "https://pacs.example.org/dw" and nodes["web"]["user"] == "carol"
    assert nodes["dimse"]["address"] == "ORTHANC@pacs.example.org:4242"
    stored = "".join(p.read_text(errors="replace") for p in (tmp_path / "config").rglob("*") if p.is_file())
    assert "pa55word" not in stored and "pacs.example.org/dw" in stored


def test_the_password_typed_now_is_sent_not_the_keyrings_old_one(qtbot, env, monkeypatch):
    """Issue 22: the keyring held an old password; the user types a new one and searches: the
    node is made with the new one (it used to send the keyring's)."""
    from ctviewer.gui import pacs_dialog
    from ctviewer.gui.pacs_dialog import KEYRING_SERVICE, PacsDialog

    env.set_password(KEYRING_SERVICE, "web", "old-password")
    made = []
    monkeypatch.setattr(pacs_dialog, "make_node", lambda n, timeout=20.0, password=None: made.append(password) or
                        (_ for _ in ()).throw(pacs_dialog_error()))
    dlg = PacsDialog()
    qtbot.addWidget(dlg)
    dlg.name.setText("web")
    dlg.address.setText("https://pacs.example.org/dw")
    dlg.user.setText("carol")
    dlg.password.setText("new-password")
    with qtbot.waitSignal(dlg.failed, timeout=10_000):
        dlg.echo()
    assert made == ["new-password"]
    assert pacs_dialog.get_password("web") == "new-password"  # this session: the typed one wins


def pacs_dialog_error():
    from ctviewer.pacs import PacsError

    return PacsError("stopped by the test")
