"""Shared fixtures: a fresh local Earth Engine emulator per test and a clean EE environment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rs_embed_ray.testing.ee_emulator import EEEmulator

EE_ENV = (
    "RS_EMBED_RAY_EE_URL",
    "EE_PROJECT",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_APPLICATION_CREDENTIALS",
)


@pytest.fixture(autouse=True)
def clean_ee_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No test may see the developer's real Earth Engine settings or credentials."""
    for name in EE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # google.auth must not probe a metadata server
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/earthengine credentials
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))


@pytest.fixture
def emulator() -> Iterator[EEEmulator]:
    with EEEmulator(retry_after_s=0) as emu:
        yield emu


@pytest.fixture
def ee_client(emulator: EEEmulator, monkeypatch: pytest.MonkeyPatch) -> EEEmulator:
    """The real earthengine-api client initialised against this test's emulator."""
    import ee
    from google.oauth2.credentials import Credentials

    monkeypatch.setattr(ee.deprecation, "_FetchDataCatalogStac", lambda: {})
    ee.data.setMaxRetries(0)
    ee.Reset()  # an earlier test may have initialised ee in this process (cached discovery)
    ee.Initialize(credentials=Credentials(token="t"), project="proj", opt_url=emulator.url)
    return emulator
