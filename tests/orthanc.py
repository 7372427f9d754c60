"""A real Orthanc server for the PACS tests (issue 14): started on free loopback ports with a
configuration written to a temporary folder (DICOM and HTTP ports, the DICOMweb plugin, basic
auth, our AE title as a known modality), stopped and restarted at will.  Debian packages it
(``orthanc``, ``orthanc-dicomweb``); ``.ci/run`` installs them.  ``orthanc_or_skip`` says why
when it is missing: a clear skip, never a silent pass."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins", "/usr/local/share/orthanc/plugins")
USER, PASSWORD = "ctviewer", "s3cret-pw"
AET = "ORTHANC"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_or_skip() -> tuple[str, str]:
    exe = shutil.which("Orthanc") or shutil.which("orthanc")
    plugin = next((str(p) for d in PLUGIN_DIRS for p in Path(d).glob("libOrthancDicomWeb.so*")), None)
    if exe is None or plugin is None:
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (Debian: apt-get install orthanc "
                    "orthanc-dicomweb; CI installs them): the PACS tests need a real server")
    return exe, plugin


class Orthanc:
    def __init__(self, folder: Path, our_aet: str = "CTVIEWER"):
        self.exe, self.plugin = orthanc_or_skip()
        self.folder = folder
        self.http_port, self.dicom_port = free_port(), free_port()
        self.our_aet = our_aet
        self.proc: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "orthanc.json"
        self.config.write_text(json.dumps({
            "Name": "CTVIEWER-TEST", "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": AET, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
            "DicomModalities": {"ctviewer": [our_aet, "127.0.0.1", free_port()]},
            "DicomCheckCalledAet": True, "DicomCheckModalityHost": False,
            "DicomAlwaysAllowEcho": False, "DicomAlwaysAllowStore": False, "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False, "UnknownSopClassAccepted": True,
            "Plugins": [self.plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StableAge": 1, "HttpTimeout": 30, "ConcurrentJobs": 2,
        }))
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    @property
    def dimse(self) -> str:
        return f"{AET}@127.0.0.1:{self.dicom_port}"

    def start(self) -> None:
        self.log = open(self.folder / "orthanc.log", "ab")
        self.proc = subprocess.Popen([self.exe, str(self.config)], stdout=self.log, stderr=subprocess.STDOUT)
        import requests

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                if requests.get(f"http://127.0.0.1:{self.http_port}/system", auth=(USER, PASSWORD), timeout=1).ok:
                    with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1):
                        return
            except (requests.RequestException, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError("Orthanc did not start within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.close()

    def upload(self, files) -> int:
        import requests

        n = 0
        for f in files:
            r = requests.post(f"http://127.0.0.1:{self.http_port}/instances", data=Path(f).read_bytes(),
                              auth=(USER, PASSWORD), timeout=30)
            r.raise_for_status()
            n += 1
        return n
