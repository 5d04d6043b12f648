"""Templated Earth Engine requests (providers/gee/template.py) with the real earthengine-api
client against the local emulator.

The reference is the client itself: with ``request_templates=False`` every expression is built
and serialised by ``ee.data.computePixels`` (the real ``ee.serializer``); the emulator records
each request body exactly as it arrived, and the bodies of the templated run must be the same
bytes, in the same order, for S2, S1 (IW found, and the relaxed-IW fallback), time series
(equal bins with a back-filled bin; explicit 30-day bins with an empty bin) and gse. Every
test also checks that templates were really used (else it would compare the client with
itself).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rs_embed_ray import export_batch
from rs_embed_ray.providers.gee import GEEProvider
from rs_embed_ray.providers.gee.template import Encoded, RequestTemplates
from rs_embed_ray.specs import PointBuffer, SensorSpec, TemporalSpec
from rs_embed_ray.testing.ee_emulator import EEEmulator, date_range_starts

S2 = SensorSpec(
    collection="COPERNICUS/S2_SR_HARMONIZED", bands=("B4", "B3", "B2"), scale_m=10, cloudy_pct=30
)
S1 = SensorSpec(collection="COPERNICUS/S1_GRD_FLOAT", bands=("VV", "VH"), scale_m=10)
GSE = SensorSpec(collection="GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL", bands=(), scale_m=10)
SUMMER = TemporalSpec.range("2022-06-01", "2022-09-01")
SPRING = TemporalSpec.range("2021-03-01", "2021-05-01")
PLACES = [
    PointBuffer(lon=8.0, lat=47.0, buffer_m=200),
    PointBuffer(lon=-58.38, lat=-34.6, buffer_m=160),
    PointBuffer(lon=0.00144, lat=0.00144, buffer_m=160),  # grid corners at exactly 0.0
]


def provider(emu: EEEmulator, **kw: Any) -> GEEProvider:
    kw.setdefault("project", "test-project")
    kw.setdefault("backoff_s", 0.01)
    return GEEProvider(url=emu.url, **kw)


def both(
    emu: EEEmulator, fetches: Callable[[GEEProvider], list[Any]]
) -> tuple[list[str], list[Any], dict[str, int]]:
    """Run ``fetches`` with templates off (the client) and on; assert the computePixels
    bodies and the patches are identical; return the bodies, patches and template stats."""
    emu.record_bodies = True
    runs = []
    for templates in (False, True):
        emu.reset_stats()
        prov = provider(emu, request_templates=templates)
        patches = fetches(prov)
        bodies = [r["body"] for r in emu.requests_of("computePixels")]
        runs.append((bodies, patches, prov.template_stats()))
    (off_bodies, off_patches, off_stats), (on_bodies, on_patches, on_stats) = runs
    assert off_stats == {}
    assert len(on_bodies) == len(off_bodies) > 0
    for a, b in zip(off_bodies, on_bodies, strict=True):
        assert a == b  # byte for byte (str of the UTF-8 body)
    for a, b in zip(off_patches, on_patches, strict=True):
        np.testing.assert_array_equal(a.data, b.data)
        assert a.meta == b.meta
    return on_bodies, on_patches, on_stats


def fetch_all(sensor: SensorSpec, windows: list[TemporalSpec], **kw: Any):
    return lambda prov: [prov.fetch(sp, t, sensor, **kw) for t in windows for sp in PLACES]


def test_s2_requests_are_the_clients_bytes(emulator: EEEmulator) -> None:
    bodies, _patches, stats = both(emulator, fetch_all(S2, [SUMMER, SPRING]))
    # one template per equality pattern of the values: the place whose corners repeat
    # (0.0, 0.0, 320.0, 320.0) has its own; every later place is spliced into one of them
    assert stats["built"] == 2 and stats["templated"] == len(bodies) - 2 == 4
    assert stats.get("rejected", 0) == 0
    exprs = [json.loads(b)["expression"] for b in bodies]
    assert len({json.dumps(e) for e in exprs}) == 6  # six different places/windows
    assert "2021-03-01" in bodies[3] and "2022-06-01" not in bodies[3]
    assert "[0.0, 0.0, 320.0, 320.0]" in bodies[2]


def test_gse_requests_are_the_clients_bytes(emulator: EEEmulator) -> None:
    years = [TemporalSpec.year(2022), TemporalSpec.year(2021)]
    bodies, patches, stats = both(emulator, fetch_all(GSE, years))
    assert stats["built"] == 2 and stats["templated"] == len(bodies) - 2 == 4
    assert patches[0].data.shape[0] == 64


def test_s1_and_its_relaxed_fallback_are_the_clients_bytes(emulator: EEEmulator) -> None:
    bodies, patches, stats = both(emulator, fetch_all(S1, [SUMMER]))
    assert stats["templated"] == 1 and all(p.meta["requests"] == 1 for p in patches)
    # no IW scenes anywhere: strict then relaxed, two request shapes, each templated
    emulator.size_hook = lambda e: 0 if "instrumentMode" in json.dumps(e) else None
    bodies, patches, stats = both(emulator, fetch_all(S1, [SUMMER, SPRING]))
    assert all(p.meta["s1_iw_relaxed_on_empty"] for p in patches)
    assert len(bodies) == 12 and stats["built"] == 4 and stats["templated"] == 8
    assert "instrumentMode" in bodies[0] and "instrumentMode" not in bodies[1]


def test_time_series_requests_are_the_clients_bytes(emulator: EEEmulator) -> None:
    # equal bins; the bin starting 2022-07-01 (of SUMMER) is empty and back-filled
    emulator.size_hook = lambda e: 0 if "2022-07-01" in date_range_starts(e) else None
    _bodies, patches, stats = both(emulator, fetch_all(S2, [SUMMER, SPRING], n_frames=3))
    assert [p.meta["n_backfilled_frames"] for p in patches] == [1, 1, 1, 0, 0, 0]
    # the empty-bin pattern is part of the shape (x 2 corner patterns)
    assert stats["built"] == 4 and stats["templated"] == 2
    assert len(emulator.requests_of("value")) == 6  # the size query stays the client's


def test_explicit_bins_are_the_clients_bytes(emulator: EEEmulator) -> None:
    window = TemporalSpec.range("2022-01-01", "2022-03-15")  # 30 + 30 + 13 days
    later = TemporalSpec.range("2022-04-01", "2022-06-14")
    emulator.size_hook = lambda e: 0 if "2022-01-31" in date_range_starts(e) else None
    bodies, patches, stats = both(
        emulator, fetch_all(S2, [window, later], n_frames=12, frame_bins="30d")
    )
    assert [p.meta["n_empty"] for p in patches] == [1, 1, 1, 0, 0, 0]
    assert np.isnan(patches[0].data[1]).all()
    assert stats["built"] == 2 and stats["templated"] == 4
    assert '"2022-05-01"' in bodies[3]  # the second window's bins were spliced in


def test_spatial_batching_union_requests_are_the_clients_bytes(emulator: EEEmulator) -> None:
    near = [PointBuffer(lon=8.0 + 0.003 * i, lat=47.0, buffer_m=160) for i in range(4)]
    bodies, patches, stats = both(
        emulator,
        lambda prov: [
            *prov.fetch_many(near[:2], SUMMER, S2),
            *prov.fetch_many(near[2:], SPRING, S2),
        ],
    )
    assert len(bodies) == 2 and stats["templated"] == 1
    assert all(p.meta["batched"]["group_size"] == 2 for p in patches)


def test_templates_refuse_what_they_cannot_splice(emulator: EEEmulator) -> None:
    import ee

    provider(emulator).ensure_ready()
    templates = RequestTemplates()

    def build(values: Any) -> Any:
        return ee.List([values[0], ee.String("fixed").cat("-y")])

    def client(value: str) -> str:
        return json.dumps(ee.serializer.encode(build([value])))

    assert not isinstance(templates.expression("k", ["a"], build), Encoded)  # first: client
    got = templates.expression("k", ["b"], build)
    assert isinstance(got, Encoded) and json.dumps(got.expression) == client("b")
    # "fixed" equals a constant of the expression: the serializer shares it, so the text
    # differs from a splice; the template must hand this place to the client
    spliced = json.dumps(got.expression).replace('"b"', '"fixed"')
    assert client("fixed") != spliced
    got = templates.expression("k", ["fixed"], build)
    assert not isinstance(got, Encoded)
    assert json.dumps(ee.serializer.encode(got)) == client("fixed")
    # values the serializer treats specially (bool) are never spliced
    assert not isinstance(templates.expression("k", [True], build), Encoded)
    assert templates.stats["templated"] == 1 and templates.stats["client"] == 3

    def picky(values: Any) -> Any:  # a client-side check no placeholder passes
        if "placeholder" in str(values[0]):
            raise ValueError("not a real value")
        return ee.List([values[0]])

    for value in ("a", "b"):  # the shape is refused once, then always built by the client
        got = templates.expression("picky", [value], picky)
        assert not isinstance(got, Encoded) and ee.serializer.encode(got)
    assert templates.stats["rejected"] == 1 and templates.stats["client"] == 5


def test_request_templates_option_is_typed(emulator: EEEmulator) -> None:
    with pytest.raises(ValueError, match="request_templates must be true or false"):
        provider(emulator, request_templates="no")
    assert provider(emulator).template_stats() == {}  # on by default, nothing sent yet
    assert provider(emulator, request_templates=False).images.templates is None


@pytest.mark.usefixtures("ray_cluster")
def test_export_identical_with_templates_on_and_off(tmp_path) -> None:
    places = [PointBuffer(15.0 + 0.01 * i, 45.0 - 0.01 * i, 160.0) for i in range(4)]
    arrays: dict[bool, list[np.ndarray]] = {}
    bodies: dict[bool, list[str]] = {}
    with EEEmulator(retry_after_s=0) as emu:
        emu.record_bodies = True
        for templates in (True, False):
            emu.reset_stats()
            out = tmp_path / f"t{int(templates)}"
            res = export_batch(
                spatials=places,
                temporal=SUMMER,
                models=["spectral_stats"],
                backend="gee",
                provider_options={"url": emu.url, "request_templates": templates},
                out=str(out),
                layout="per_item",
                show_progress=False,
                num_workers=1,
                chunk_size=4,
            )
            assert all(r["status"] == "ok" for r in res)
            bodies[templates] = sorted(r["body"] for r in emu.requests_of("computePixels"))
            arrays[templates] = []
            for i in range(len(places)):
                with np.load(out / f"p{i:05d}.npz") as z:
                    arrays[templates] += [z[k] for k in sorted(z.files)]
    assert len(bodies[True]) == len(places) and bodies[True] == bodies[False]
    assert len(arrays[True]) == len(arrays[False]) >= 2 * len(places)
    for a, b in zip(arrays[True], arrays[False], strict=True):
        np.testing.assert_array_equal(a, b)
