"""A real Orthanc archive for the PACS tests: Debian's `orthanc` + `orthanc-dicomweb`, on loopback ports, with a
temporary storage folder, HTTP basic auth, the DICOMweb plugin on and the DIMSE port open.

`OrthancServer(folder).start()` writes the configuration, starts `Orthanc` and waits until its REST API answers;
`restart()` stops and starts it on the same ports and storage (the "archive restarts" fault); `stop()` ends it.
Without the packages the PACS tests skip, unless env MAMMOKIT_REQUIRE_ORTHANC=1 (CI installs them) makes that a
failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

ORTHANC_BIN = "Orthanc"
PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins", "/usr/local/share/orthanc/plugins")
DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"
USER, PASSWORD = "mammokit-test", "correct horse battery staple"
AET = "ORTHANC"
ENV_REQUIRE = "MAMMOKIT_REQUIRE_ORTHANC"
# What the README tells an Orthanc admin to add: forward every MG instance to mammokit's listener (modality entry
# "mammokit"), except what mammokit itself sent (its results are SR/SEG/OT anyway; the AE check also keeps a resend of
# images from looping).
ROUTE_LUA = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  if tags['Modality'] == 'MG' and origin['RemoteAet'] ~= 'MAMMOKIT' then
    SendToModality(instanceId, 'mammokit')
  end
end
"""


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dicomweb_plugin() -> Path | None:
    """The installed DICOMweb plugin, or None."""
    for folder in PLUGIN_DIRS:
        path = Path(folder) / DICOMWEB_PLUGIN
        if path.is_file():
            return path
    return None


def require_orthanc() -> Path:
    """The DICOMweb plugin path; skips the test without Orthanc (fails instead under MAMMOKIT_REQUIRE_ORTHANC)."""
    plugin = dicomweb_plugin()
    if shutil.which(ORTHANC_BIN) and plugin is not None:
        return plugin
    message = "Orthanc with the DICOMweb plugin is not installed (Debian: orthanc orthanc-dicomweb)"
    if os.environ.get(ENV_REQUIRE) == "1":
        pytest.fail(f"{message}, and {ENV_REQUIRE}=1 requires it")
    pytest.skip(message)


class OrthancServer:
    """One Orthanc process: `url` (REST), `dicomweb` (DICOMweb root), `dicom_port` and `aet` (DIMSE), `auth`."""

    def __init__(self, folder: Path, *, modalities: dict[str, tuple[str, str, int]] | None = None,
                 lua: str | None = None, stable_age_s: int = 1, extra: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.plugin = require_orthanc()
        self.http_port, self.dicom_port = free_port(), free_port()
        self.modalities = dict(modalities or {})
        self.lua = lua
        self.stable_age_s = stable_age_s
        self.extra = dict(extra or {})
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def aet(self) -> str:
        return AET

    @property
    def auth(self) -> tuple[str, str]:
        return USER, PASSWORD

    def config(self) -> dict[str, Any]:
        """The Orthanc configuration this server runs with."""
        storage = self.folder / "storage"
        config: dict[str, Any] = {
            "Name": "mammokit-test-archive",
            "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": AET,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
            "Plugins": [str(self.plugin)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
            "DicomModalities": {name: list(entry) for name, entry in self.modalities.items()},
            "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True, "DicomCheckCalledAet": False,
            "UnknownSopClassAccepted": True, "StableAge": self.stable_age_s,
            "DicomScpTimeout": 10, "DicomAssociationCloseDelay": 0, "HttpTimeout": 10,
            "StorageCompression": False, "SaveJobs": False, "ConcurrentJobs": 2,
            "LuaScripts": [],
        }
        if self.lua:
            script = self.folder / "route.lua"
            script.write_text(self.lua)
            config["LuaScripts"] = [str(script)]
        config.update(self.extra)
        return config

    def start(self, timeout_s: float = 30.0) -> OrthancServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(self.config(), indent=1))
        log = open(self.folder / "orthanc.log", "ab")  # noqa: SIM115 - owned by the process for its lifetime
        self.process = subprocess.Popen([ORTHANC_BIN, str(path)], stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.folder)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}: see {self.folder / 'orthanc.log'}")
            try:
                if requests.get(f"{self.url}/system", auth=self.auth, timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout_s} s: see {self.folder / 'orthanc.log'}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> OrthancServer:
        self.stop()
        return self.start()

    def get(self, route: str, **kwargs: Any) -> Any:
        """GET a REST route (e.g. "/studies") and return its JSON."""
        response = requests.get(f"{self.url}{route}", auth=self.auth, timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def upload(self, files: list[Path]) -> list[str]:
        """Store DICOM files through the REST API; returns Orthanc's instance ids."""
        ids = []
        for path in files:
            response = requests.post(f"{self.url}/instances", data=Path(path).read_bytes(), auth=self.auth, timeout=30)
            response.raise_for_status()
            ids.append(response.json()["ID"])
        return ids

    def instance_file(self, instance_id: str) -> bytes:
        """The stored DICOM file of one instance."""
        response = requests.get(f"{self.url}/instances/{instance_id}/file", auth=self.auth, timeout=30)
        response.raise_for_status()
        return response.content

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
