"""rs_embed_ray.sensors: the one copy of the sensor facts both providers read (spec
providers_and_models.md §1.4-1.5), checked against the spec's tables written out here."""

from __future__ import annotations

from datetime import date

import pytest

from rs_embed_ray import sensors
from rs_embed_ray.providers.gee import resolve_band, split_date_range
from rs_embed_ray.providers.gee.job import build_job
from rs_embed_ray.specs import SensorSpec, TemporalSpec


@pytest.mark.parametrize(
    ("collection", "alias", "band"),
    [
        ("COPERNICUS/S2_SR_HARMONIZED", "blue", "B2"),
        ("COPERNICUS/S2_SR_HARMONIZED", "NIR_NARROW", "B8A"),
        ("COPERNICUS/S2_SR_HARMONIZED", "RED_EDGE_4", "B8A"),
        ("COPERNICUS/S2_SR_HARMONIZED", "SWIR_2", "B12"),
        ("COPERNICUS/S2_SR_HARMONIZED", "COASTAL", "COASTAL"),  # not an EE alias (spec)
        ("LANDSAT/LC09/C02/T1_L2", "NIR", "SR_B5"),
        ("LANDSAT/LC08/C02/T1_L2", "SWIR_1", "SR_B6"),
        ("LANDSAT/LE07/C02/T1_L2", "BLUE", "SR_B1"),
        ("LANDSAT/LT05/C02/T1_L2", "SWIR2", "SR_B7"),
        ("COPERNICUS/S1_GRD", "VV", "VV"),
    ],
)
def test_band_aliases_follow_the_spec(collection: str, alias: str, band: str) -> None:
    assert sensors.resolve_band(collection, alias) == band
    assert resolve_band(collection, alias) == band  # the name gee users import


def test_local_files_may_also_name_coastal_and_cirrus() -> None:
    from rs_embed_ray.providers.local.index import aliases_for

    s2 = aliases_for("COPERNICUS/S2_SR_HARMONIZED")
    assert s2["COASTAL"] == "B1" and s2["CIRRUS"] == "B10" and s2["RED"] == "B4"
    assert "COASTAL" not in sensors.band_aliases("COPERNICUS/S2_SR_HARMONIZED")


def test_equal_bins_are_one_helper_for_both_backends() -> None:
    from rs_embed_ray.providers.local import split_days

    bins = sensors.equal_day_bins(date(2022, 1, 1), date(2022, 1, 11), 3)
    assert bins == [
        (date(2022, 1, 1), date(2022, 1, 4)),
        (date(2022, 1, 4), date(2022, 1, 7)),
        (date(2022, 1, 7), date(2022, 1, 11)),
    ]
    assert split_days(date(2022, 1, 1), date(2022, 1, 11), 3) == bins
    iso = [(a.isoformat(), b.isoformat()) for a, b in bins]
    assert split_date_range("2022-01-01", "2022-01-11", 3) == iso


def test_gse_constants_drive_the_gee_job() -> None:
    job = build_job(
        TemporalSpec.year(2021), SensorSpec(collection=sensors.GSE_COLLECTION, bands=()), None
    )
    assert job.kind == "gse" and job.fill == sensors.GSE_FILL == -9999.0
    assert tuple(job.resolved) == sensors.GSE_BANDS and len(sensors.GSE_BANDS) == 64
    assert (job.start, job.end) == ("2021-01-01", "2022-01-01")
