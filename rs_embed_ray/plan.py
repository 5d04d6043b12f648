"""ExportPlan: everything decided before the cluster does any work. Pure Python, no ray.

Validation happens here so that every error a user can cause is raised before Ray starts:
places, names, time window, output, models, sensors, output target and its writability.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rs_embed_ray.errors import ModelError, SpecError
from rs_embed_ray.geo import Grid, grid_for
from rs_embed_ray.io import storage
from rs_embed_ray.io.formats import all_formats, format_names, get_format
from rs_embed_ray.io.keys import sanitize_key
from rs_embed_ray.io.lazy import PerPlace
from rs_embed_ray.io.manifest import fingerprint, fingerprint_plain, jsonable
from rs_embed_ray.io.quantize import check_dtype
from rs_embed_ray.models.base import ModelInfo
from rs_embed_ray.models.registry import (
    canonical_model_id,
    get_info,
    implementation_target,
    require_available,
)
from rs_embed_ray.options import ExportOptions, RunOptions
from rs_embed_ray.providers import provider_names, provider_target
from rs_embed_ray.specs import (
    FetchSpec,
    InputPrepSpec,
    OutputSpec,
    SensorSpec,
    SpatialSpec,
    TemporalSpec,
    resolve_input_prep,
    validate_spatials,
)
from rs_embed_ray.validation import (
    check_existing_format,
    check_name_lengths,
    check_not_inputs,
    check_output_location,
    check_patch_sizes,
    check_source,
)

Layout = Literal["per_item", "combined"]
STATE_DIR_PER_ITEM = "_rs_embed_ray"
STATE_SUFFIX_COMBINED = ".rs_embed_ray"


@dataclass(frozen=True)
class ModelRequest:
    """One requested model, resolved: its sensor, fetch group and fingerprint."""

    name: str  # the user's spelling (manifests and keys use it, as rs-embed does)
    model_id: str
    key: str  # sanitize_key(name): array-key suffix
    info: ModelInfo
    sensor: SensorSpec | None
    weights: str | None
    model_config: dict[str, Any] | None
    input_key: str | None = None  # sensor identity + fetch semantics
    fetch_key: str | None = None  # the fetch group (band union) this model reads from
    channels: tuple[int, ...] | None = None  # this model's bands within the group's bands
    # "module:Class" resolved in the driver: workers import it (registrations stay here)
    target: str | None = None

    def fingerprint_payload(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_id": self.model_id,
            "sensor": jsonable(self.sensor),
            "model_config": jsonable(self.model_config),
            "weights": self.weights,
            **self.code_version_payload(),
        }

    def code_version_payload(self) -> dict[str, Any]:
        """``{"code_version": n}`` once a fix changed the model's numbers (n > 1): what
        the older code embedded then no longer matches on resume. Empty at version 1, so
        the fingerprints of every unchanged model stay as they were."""
        v = int(self.info.code_version)
        return {"code_version": v} if v != 1 else {}


@dataclass(frozen=True)
class FetchGroup:
    """Models whose sensors differ at most in bands share one fetch of the band union."""

    key: str
    sensor: SensorSpec
    n_frames: int | None
    members: tuple[str, ...]  # model keys
    # explicit bins ("30d", ModelInfo.frame_bins): n_frames is then the cap on their count
    frame_bins: str | None = None


def _pixels(grid: Grid) -> int:
    return grid.width * grid.height


# places whose grids estimate ``ExportPlan.place_bytes``: a million places' grids would take
# seconds, and places of one run are mostly alike
PLACE_BYTES_SAMPLE = 256


@dataclass(frozen=True)
class ExportPlan:
    """What to export, resolved and checked (the request), plus how to run it (``run``)."""

    layout: Layout
    format: str
    out_path: Path  # combined file, or the per-item directory (a UPath on a bucket)
    names: list[str]
    spatials: list[SpatialSpec]
    temporal: TemporalSpec | None
    output: OutputSpec
    models: list[ModelRequest]
    groups: list[FetchGroup]
    backend: str
    provider_options: dict[str, Any]
    device: str
    input_prep: InputPrepSpec
    input_prep_given: Any
    save_inputs: bool
    save_embeddings: bool
    save_manifest: bool
    run: RunOptions  # how to run it (sizes, retries, quota, resume): one typed object
    # per-place windows, fully resolved (a row without its own window holds the run's);
    # None when every place uses the run's window
    temporals: list[TemporalSpec | None] | None = None
    # "module:factory" of ``backend``, resolved in the driver: workers import it
    provider_target: str | None = None
    dtype: str = "float32"  # how vectors are stored (io.quantize)

    @property
    def n_items(self) -> int:
        return len(self.spatials)

    def temporal_of(self, index: int) -> TemporalSpec | None:
        """The window of place ``index``: its own when given, else the run's."""
        if self.temporals is not None:
            return self.temporals[index]
        return self.temporal

    # every place's manifest forms, made when read: not held for the whole run (io.lazy)
    def spatial_forms(self) -> PerPlace:
        return PerPlace(self.n_items, lambda i: jsonable(self.spatials[i]))

    def temporal_forms(self) -> PerPlace:
        return PerPlace(self.n_items, lambda i: jsonable(self.temporal_of(i)))

    def centers(self) -> PerPlace:
        return PerPlace(self.n_items, lambda i: self.spatials[i].center())

    @functools.cached_property
    def place_bytes(self) -> int:
        """About the most bytes of fetched pixels (float32) one place holds in any fetch
        group, from the grids of up to ``PLACE_BYTES_SAMPLE`` places spread over the run:
        what sizes the calls (``pipeline.sizing.call_places``). 0 without places."""
        step = max(1, -(-self.n_items // PLACE_BYTES_SAMPLE))
        sample = self.spatials[::step]
        out = 0
        for g in self.groups:
            pixels = max((_pixels(grid_for(s, g.sensor.scale_m)) for s in sample), default=0)
            out = max(out, 4 * len(g.sensor.bands) * max(1, g.n_frames or 1) * pixels)
        return out

    @property
    def ext(self) -> str:
        return get_format(self.format).ext

    @property
    def state_dir(self) -> Path:
        if self.layout == "per_item":
            return self.out_path / STATE_DIR_PER_ITEM
        return self.out_path.with_name(self.out_path.stem + STATE_SUFFIX_COMBINED)

    def item_path(self, index: int) -> Path:
        return self.out_path / f"{self.names[index]}{self.ext}"

    def model(self, key: str) -> ModelRequest:
        return next(m for m in self.models if m.key == key)

    def last_model_key(self) -> str | None:
        """The model whose embedding stage runs last, in the runner's order (each group's
        first member with its fetch, then the other models in order); None without
        embeddings. Its stage is the one after which a place's file can be written."""
        if not self.save_embeddings or not self.models:
            return None
        chained = {g.members[0] for g in self.groups}
        later = [m.key for m in self.models if m.key not in chained]
        return later[-1] if later else self.groups[-1].members[0]

    def group(self, key: str) -> FetchGroup:
        return next(g for g in self.groups if g.key == key)

    # -- fingerprints -------------------------------------------------------------------
    def _request_payload(self) -> dict[str, Any]:
        return {
            "models": [
                {
                    "name": m.name,
                    "backend": self.backend,
                    "sensor": jsonable(m.sensor),
                    "model_config": jsonable(m.model_config),
                    "weights": m.weights,
                    **m.code_version_payload(),
                }
                for m in self.models
            ],
            "temporal": jsonable(self.temporal),
            "output": jsonable(self.output),
            "format": self.format,
            "save_inputs": bool(self.save_inputs),
            "save_embeddings": bool(self.save_embeddings),
            "input_prep": jsonable(self.input_prep),
        }

    def _payload(self) -> dict[str, Any]:
        """The request payload, with the storage dtype only when it is not the default (so
        float32 fingerprints of earlier runs hold, and a dtype change is an option change)."""
        payload = self._request_payload()
        if self.dtype != "float32":
            payload["dtype"] = self.dtype
        return payload

    # -- the place-independent parts of the per-place fingerprints, made JSON-plain once:
    # the driver fingerprints every place three or four times (patch, pair, item, resume),
    # and making the whole request plain again each time was most of its CPU per place
    @functools.cached_property
    def _payload_plain(self) -> dict[str, Any]:
        return jsonable(self._payload())

    @functools.cached_property
    def _model_plain(self) -> dict[str, Any]:
        return {m.key: jsonable(m.fingerprint_payload()) for m in self.models}

    @functools.cached_property
    def _group_plain(self) -> dict[str, dict[str, Any]]:
        return {
            g.key: jsonable(
                {
                    "sensor": g.sensor.identity(),
                    "n_frames": g.n_frames,
                    # only when set, so the cache keys of every other group stay as they were
                    **({"frame_bins": g.frame_bins} if g.frame_bins else {}),
                }
            )
            for g in self.groups
        }

    def item_fingerprint(self, index: int) -> str:
        """Per-item request fingerprint (contract §2.6), deterministic across processes."""
        return fingerprint_plain(
            {
                **self._payload_plain,
                "temporal": jsonable(self.temporal_of(index)),
                "spatial": jsonable(self.spatials[index]),
            }
        )

    def run_fingerprint(self) -> str:
        """Combined request fingerprint (contract §2.6)."""
        payload = {**self._payload(), "spatials": [jsonable(s) for s in self.spatials]}
        if self.temporals is not None:  # absent otherwise: fingerprints of older runs hold
            payload["temporals"] = [jsonable(t) for t in self.temporals]
        return fingerprint(payload)

    def _place_identity(self, index: int) -> dict[str, Any]:
        """Where the pixels of place ``index`` come from: the start of both the patch and the
        pair fingerprint (``fingerprint`` sorts the keys, so the order here does not count);
        JSON-plain."""
        return {
            "backend": self.backend,
            "source": jsonable(self.provider_options.get("source")),
            "spatial": jsonable(self.spatials[index]),
            "temporal": jsonable(self.temporal_of(index)),
        }

    def patch_fingerprint(self, index: int, group: FetchGroup) -> str:
        return fingerprint_plain({**self._place_identity(index), **self._group_plain[group.key]})

    def pair_fingerprint(self, index: int, model: ModelRequest) -> str:
        """Identity of one (item, model) embedding: what must match to skip it on resume."""
        return fingerprint_plain(
            {
                **self._place_identity(index),
                "output": self._payload_plain["output"],
                "input_prep": self._payload_plain["input_prep"],
                "model": self._model_plain[model.key],
            }
        )


# -- validation helpers ----------------------------------------------------------------


def validate_names(names: Any, n: int) -> list[str]:
    """Names become file names: unique, no separators, no '..', printable, not empty."""
    if names is None:
        return [f"p{i:05d}" for i in range(n)]
    if not isinstance(names, (list, tuple)):
        raise ModelError("names must be a list of strings.")
    if len(names) != n:
        raise ModelError(
            f"names must have the same length as spatials ({len(names)} names for {n} places)."
        )
    out: list[str] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(names):
        if not isinstance(raw, str):
            raise ModelError(f"names[{i}] must be a string, got {type(raw).__name__}.")
        name = unicodedata.normalize("NFC", raw.strip())
        bad = (
            not name
            or name in (".", "..")
            or "/" in name
            or "\\" in name
            or "\x00" in name
            or name.startswith(".")
            or any(unicodedata.category(ch).startswith("C") for ch in name)
        )
        if bad or os.path.isabs(name):
            raise ModelError(
                f"names[{i}]={raw!r} is not a safe file name: use letters, digits, '-', '_' "
                "and '.', without path separators, '..' or a leading dot."
            )
        key = name.casefold()
        if key in seen:
            raise ModelError(
                f"Duplicate name {raw!r} at names[{seen[key]}] and names[{i}]: "
                "every place needs its own name (names are file names)."
            )
        seen[key] = i
        out.append(name)
    return out


def normalize_format(fmt: Any) -> str:
    f = str(fmt).strip().lower()
    if f not in format_names():
        raise ModelError(f"Unsupported export format: {fmt!r}. Supported: {format_names()}.")
    return f


def resolve_target(
    *,
    out: str | None,
    layout: str | None,
    out_dir: str | None,
    out_path: str | None,
    fmt: str,
) -> tuple[Layout, Path]:
    """Seed API rules: out+layout together, or exactly one of out_dir / out_path."""
    if out is not None or layout is not None:
        if out_dir is not None or out_path is not None:
            raise ModelError("Use either out+layout or out_dir/out_path, not both.")
        if out is None or layout is None:
            raise ModelError("Provide both out and layout when using the decoupled output API.")
        lay = str(layout).strip().lower().replace("-", "_")
        aliases = {
            "combined": "combined",
            "single_file": "combined",
            "file": "combined",
            "per_item": "per_item",
            "dir": "per_item",
            "directory": "per_item",
        }
        if lay not in aliases:
            raise ModelError(f"Unknown layout {layout!r}: use 'per_item' or 'combined'.")
        resolved: Layout = aliases[lay]  # type: ignore[assignment]
        target = str(out)
    else:
        if out_dir is None and out_path is None:
            raise ModelError("export_batch requires out_dir or out_path (or out + layout).")
        if out_dir is not None and out_path is not None:
            raise ModelError("Provide only one of out_dir or out_path.")
        resolved = "per_item" if out_dir is not None else "combined"
        target = str(out_dir if out_dir is not None else out_path)
    if not target.strip():
        raise ModelError("The output path is empty.")
    storage.check_url(target)  # s3:// and gs:// (io.storage); any other scheme is refused
    remote = storage.is_remote(target)
    path = storage.as_path(target.rstrip("/")) if remote else Path(target).expanduser()
    if resolved == "combined":
        ext = get_format(fmt).ext
        known = {e for f in all_formats() for e in (*f.extensions, *f.aliases)}
        if path.suffix.lower() in known and path.suffix.lower() != ext:
            # the anchor appended ('g.nc' -> 'g.nc.npz'); replacing is what users mean
            path = path.with_suffix(ext)
        elif path.suffix.lower() != ext:
            path = path.with_name(path.name + ext)
    return resolved, path if remote else path.resolve()


def check_writable(layout: Layout, path: Path, directory_store: bool = False) -> None:
    """Fail before any work if the output location cannot be written (``directory_store``:
    the combined output is a directory, a Zarr store)."""
    if storage.is_remote(path):
        storage.check_bucket(path)  # exists, and these credentials may list it
        return
    folder = path if layout == "per_item" else path.parent
    if folder.exists() and not folder.is_dir():
        raise ModelError(f"Output location {folder} exists and is not a directory.")
    if layout == "combined" and path.exists() and path.is_dir() and not directory_store:
        raise ModelError(f"Output file {path} is a directory; choose a file name.")
    if layout == "combined" and directory_store and path.exists() and not path.is_dir():
        raise ModelError(f"Output store {path} exists and is a file; choose another name.")
    probe_root = folder
    while not probe_root.exists():
        probe_root = probe_root.parent
    if not probe_root.is_dir():
        raise ModelError(f"Output location {folder} is under {probe_root}, which is a file.")
    if not os.access(probe_root, os.W_OK | os.X_OK):
        raise ModelError(f"Output location {folder} is not writable (checked {probe_root}).")


def resolve_models(
    models: Any,
    *,
    sensor: SensorSpec | None,
    per_model_sensors: dict[str, SensorSpec] | None,
    weights: dict[str, str] | None,
    model_configs: dict[str, dict[str, Any]] | None,
    output: OutputSpec,
    fetch: FetchSpec | None = None,
    modality: str | None = None,
    per_model_fetches: dict[str, FetchSpec] | None = None,
    per_model_modalities: dict[str, str] | None = None,
) -> list[ModelRequest]:
    if not isinstance(models, (list, tuple)) or not models:
        raise ModelError("models must be a non-empty list[str].")
    reqs: list[ModelRequest] = []
    seen: dict[str, str] = {}
    seen_ids: dict[str, str] = {}
    for entry in models:
        if not isinstance(entry, str) or not entry.strip():
            raise ModelError("models entries must be non-empty strings (model ids).")
        info = get_info(entry)
        key = sanitize_key(entry)
        if key in seen or info.model_id in seen_ids:
            other = seen.get(key) or seen_ids[info.model_id]
            raise ModelError(
                f"Duplicate model name(s) in export request: {entry!r} and {other!r} are the "
                "same model; list each model once."
            )
        seen[key] = entry
        seen_ids[info.model_id] = entry
        require_available(entry)
        if output.mode not in info.outputs:
            raise ModelError(
                f"Model {entry!r} does not support output.mode={output.mode!r}. "
                f"Supported: {list(info.outputs)}"
            )
        reqs.append(
            ModelRequest(
                name=entry,
                model_id=info.model_id,
                key=key,
                info=info,
                sensor=info.sensor,
                weights=None,
                model_config=None,
                target=implementation_target(entry),
            )
        )

    def lookup(table: dict[str, Any] | None, what: str) -> dict[str, Any]:
        if not table:
            return {}
        out: dict[str, Any] = {}
        for k, v in table.items():
            match = [
                r for r in reqs if k in (r.name, r.model_id) or canonical_model_id(k) == r.model_id
            ]
            if not match:
                raise ModelError(
                    f"{what} has an entry for {k!r}, which is not among the requested models "
                    f"{[r.name for r in reqs]}."
                )
            out[match[0].key] = v
        return out

    per_sensor = lookup(per_model_sensors, "per_model_sensors")
    per_weights = lookup(weights, "weights")
    per_cfg = lookup(model_configs, "model_configs")
    per_fetch = lookup(per_model_fetches, "ExportModelRequest.fetch")
    per_mod = lookup(per_model_modalities, "ExportModelRequest.modality")
    resolved: list[ModelRequest] = []
    for r in reqs:
        own_data = r.info.kind == "precomputed" and r.info.sensor is None
        if own_data and r.key in per_sensor:
            raise ModelError(
                f"Model {r.name!r} reads its own product file and fetches nothing, so it "
                "takes no sensor: drop its per_model_sensors entry."
            )
        # a run-wide sensor is for the models that fetch pixels, not for a product file
        default = r.sensor if own_data or sensor is None else sensor
        sens = per_sensor.get(r.key, default)
        if sens is not None and not isinstance(sens, SensorSpec):
            raise ModelError(f"sensor for model {r.name!r} must be a SensorSpec.")
        given = per_sensor.get(r.key, sensor)  # the user's own sensor, if any
        mod = per_mod.get(r.key, modality)
        cfg = per_cfg.get(r.key)
        alt, alt_sensor = _alternate_modality(r, mod, cfg)
        if alt is not None:
            sens = given if given is not None else alt_sensor
            mod, cfg = None, {**(cfg or {}), "modality": alt}
            per_cfg[r.key] = cfg
        sens = _apply_fetch_modality(r, sens, given, per_fetch.get(r.key, fetch), mod)
        if alt == "s1" and sens is not None and _s1_is_linear(sens):
            per_cfg[r.key] = {**(cfg or {}), "s1_units": "linear"}  # the model converts to dB
        if sens is None and r.info.kind == "on_the_fly":
            raise ModelError(
                f"Model {r.name!r} has no default sensor; pass sensor=SensorSpec(...)."
            )
        w = per_weights.get(r.key)
        if w is not None and not isinstance(w, str):
            raise ModelError(f"weights for {r.name!r} must be a path string or 'random'.")
        if w is not None and w != "random" and not Path(w).expanduser().exists():
            raise ModelError(
                f"weights for {r.name!r}: file {w!r} does not exist (pass a checkpoint path, "
                "or 'random' for random initialisation)."
            )
        if w is not None and w != "random":
            w = str(Path(w).expanduser().resolve())
        resolved.append(
            dataclasses.replace(r, sensor=sens, weights=w, model_config=per_cfg.get(r.key))
        )
    return resolved


def normalize_modality(value: Any) -> str:
    """rs-embed's modality spelling rules: ``Sentinel-2`` -> ``s2``, ``s2l2a`` -> ``s2_l2a``."""
    m = str(value).strip().lower().replace("-", "_")
    aliases = {
        "sentinel1": "s1",
        "sentinel_1": "s1",
        "sentinel2": "s2",
        "sentinel_2": "s2",
        "s2l1c": "s2_l1c",
        "s2l2a": "s2_l2a",
    }
    return aliases.get(m, m)


def _s1_is_linear(sensor: SensorSpec) -> bool:
    """An S1 fetch in linear power (``S1_GRD_FLOAT``, or ``S1_GRD`` with ``use_float_linear``)."""
    c = sensor.collection.upper()
    return c.endswith("S1_GRD_FLOAT") or (c.endswith("S1_GRD") and bool(sensor.use_float_linear))


def _alternate_modality(
    r: ModelRequest, modality: Any, cfg: dict[str, Any] | None
) -> tuple[str | None, SensorSpec | None]:
    """A model's non-default modality (``ModelInfo.modality_sensors``: satmaepp ``s2_10b``,
    olmoearth ``s1``) named by ``modality=`` or ``model_config["modality"]``: (name, its
    default sensor), else (None, None). The two spellings must agree."""
    alts = dict(r.info.modality_sensors)
    if not alts:
        return None, None
    want = normalize_modality(modality) if modality is not None else None
    raw_cfg = (cfg or {}).get("modality") if isinstance(cfg, dict) else None
    in_cfg = normalize_modality(raw_cfg) if raw_cfg is not None else None
    if want is not None and in_cfg is not None and want != in_cfg:
        raise ModelError(
            f"Conflicting modality values for model {r.name!r}: modality={modality!r}, "
            f"model_config['modality']={raw_cfg!r}."
        )
    name = want or in_cfg
    if name in alts:
        return name, alts[name]
    return None, None


def _apply_fetch_modality(
    r: ModelRequest,
    sens: SensorSpec | None,
    given: SensorSpec | None,
    fetch: Any,
    modality: Any,
) -> SensorSpec | None:
    """rs-embed 0.3's ``fetch=FetchSpec(...)`` and ``modality=`` on top of a model's sensor
    (contract §2.4): a light override of the default sensor, and a modality the model
    exposes (its default sensor's)."""
    if fetch is not None and not isinstance(fetch, FetchSpec):
        raise ModelError(f"fetch for model {r.name!r} must be a FetchSpec.")
    if given is not None and fetch is not None:
        raise ModelError("Use either sensor=... or fetch=..., not both.")
    if modality is not None:
        want = normalize_modality(modality)
        if given is not None and given.modality and normalize_modality(given.modality) != want:
            raise ModelError(
                f"Conflicting modality values for model {r.name!r}: sensor.modality="
                f"{given.modality!r}, modality={modality!r}."
            )
        own = r.info.sensor.modality if r.info.sensor is not None else None
        if own is None or normalize_modality(own) != want:
            raise ModelError(f"Model {r.name!r} does not expose modality={modality!r}.")
        if sens is not None:
            sens = dataclasses.replace(sens, modality=own)
    if fetch is not None:
        if r.info.sensor is None:
            raise ModelError(f"Model {r.name!r} does not support fetch=... overrides.")
        sens = fetch.apply(sens if sens is not None else r.info.sensor)
    return sens


def check_model_requests(
    models: list[ModelRequest],
    temporals: list[TemporalSpec | None],
    spatials: list[SpatialSpec] | None = None,
) -> None:
    """Model-specific request checks (``Embedder.check_request``), e.g. a product's only
    year, and a product's per-place check (``check_places``, e.g. tessera's tiles on disk):
    raised here, before any cluster work, like every other request error."""
    from rs_embed_ray.models.registry import embedder_class

    for m in models:
        cls = embedder_class(m.model_id)
        cls.check_model_config(m.model_config)
        cls.check_weights(m.weights, m.model_config)
        cls.check_request(weights=m.weights, model_config=m.model_config, temporals=temporals)
        places = getattr(cls, "check_places", None)
        if places is not None and spatials is not None:
            places(
                weights=m.weights, model_config=m.model_config, spatials=spatials,
                temporals=temporals,
            )  # fmt: skip


def _sensor_key(sensor: SensorSpec) -> str:
    return sanitize_key(fingerprint(sensor.identity())[:12])


def build_groups(models: list[ModelRequest]) -> tuple[list[ModelRequest], list[FetchGroup]]:
    """Share fetches: same sensor identity except bands + same semantics -> one band-union fetch."""
    buckets: dict[str, list[ModelRequest]] = {}
    for m in models:
        if m.sensor is None:
            continue
        ident = m.sensor.identity()
        ident.pop("bands")
        if str(ident.get("modality") or "").lower() != "gse":
            # a model's modality hint (terrafm's "s2") does not change the pixels fetched
            # (providers read it only for gse), so it must not split a shared fetch
            ident.pop("modality", None)
        gid = fingerprint({"sensor": ident, "semantics": m.info.fetch_semantics})
        buckets.setdefault(gid, []).append(m)
    out_models = {m.key: m for m in models}
    groups: list[FetchGroup] = []
    for members in buckets.values():
        bands: list[str] = []
        for m in members:
            for b in m.sensor.bands:  # type: ignore[union-attr]
                if b not in bands:
                    bands.append(b)
        modalities = {m.sensor.modality for m in members}  # type: ignore[union-attr]
        gsensor = dataclasses.replace(
            members[0].sensor,  # type: ignore[arg-type]
            bands=tuple(bands),
            modality=modalities.pop() if len(modalities) == 1 else None,
        )
        sem = members[0].info.fetch_semantics
        gkey = _sensor_key(gsensor) + ("" if sem == "single" else f"--{sanitize_key(sem)}")
        n_frames = members[0].info.n_frames if members[0].info.temporal_mode == "multi" else None
        fbins = members[0].info.frame_bins if n_frames is not None else None
        groups.append(
            FetchGroup(gkey, gsensor, n_frames, tuple(m.key for m in members), frame_bins=fbins)
        )
        for m in members:
            ikey = _sensor_key(m.sensor) + ("" if sem == "single" else f"--{sanitize_key(sem)}")  # type: ignore[arg-type]
            chans = tuple(bands.index(b) for b in m.sensor.bands)  # type: ignore[union-attr]
            out_models[m.key] = dataclasses.replace(
                m, input_key=ikey, fetch_key=gkey, channels=chans
            )
    return [out_models[m.key] for m in models], groups


def resolve_backend(backend: Any, source: str | None, *, fetches: bool = True) -> str:
    """The provider name; ``fetches=False`` (only models that read their own product)
    lets ``local`` run without a source, since nothing is fetched."""
    b = str(backend).strip().lower() if backend is not None else "auto"
    if b == "auto":
        b = "local" if source else os.environ.get("RS_EMBED_DEFAULT_PROVIDER", "gee")
    if b not in provider_names():  # the built-ins, or one registered (a test provider)
        raise ModelError(f"Unknown backend {backend!r}: use 'auto', 'gee' or 'local'.")
    if b == "local" and (source or fetches):
        if not source:
            raise ModelError("backend='local' needs source=PATH (CLI: --source PATH).")
        if not Path(source).expanduser().exists():
            raise ModelError(f"source {source!r} does not exist.")
    return b


def validate_temporal(temporal: Any) -> TemporalSpec | None:
    if temporal is None:
        return None
    if not isinstance(temporal, TemporalSpec):
        raise SpecError("temporal must be a TemporalSpec or None.")
    temporal.validate()
    return temporal


def validate_temporals(
    temporals: Any, n: int, run: TemporalSpec | None
) -> list[TemporalSpec | None] | None:
    """Per-place windows: one ``TemporalSpec`` or ``None`` (the run's window) per place.

    Returns the resolved list (``None`` entries replaced by the run's window), or ``None``
    when no place has a window of its own that differs from the run's.
    """
    if temporals is None:
        return None
    if not isinstance(temporals, (list, tuple)):
        raise ModelError("temporals must be a list of TemporalSpec or None (one per place).")
    if len(temporals) != n:
        raise ModelError(
            f"temporals must have the same length as spatials ({len(temporals)} windows for "
            f"{n} places)."
        )
    out: list[TemporalSpec | None] = []
    for i, t in enumerate(temporals):
        if t is None:
            out.append(run)
            continue
        if not isinstance(t, TemporalSpec):
            raise SpecError(f"temporals[{i}] must be a TemporalSpec or None.")
        try:
            t.validate()
        except SpecError as exc:
            raise SpecError(f"temporals[{i}]: {exc}") from None
        out.append(t)
    if all(t == run for t in out):
        return None
    return out


def validate_format_combination(
    fmt: str, layout: Layout, output: OutputSpec, save_inputs: bool
) -> None:
    """What one format cannot hold (GeoParquet: pooled vectors in one combined file)."""
    get_format(fmt).check_request(layout, output.mode, save_inputs)


def validate_output(output: Any) -> OutputSpec:
    if not isinstance(output, OutputSpec):
        raise ModelError("output must be an OutputSpec (OutputSpec.pooled() or OutputSpec.grid()).")
    try:
        output.validate()
    except SpecError as exc:
        raise ModelError(str(exc)) from None
    return output


def build_plan(o: ExportOptions) -> ExportPlan:
    """Resolve a flat, type-checked request (``ExportOptions.flat`` then
    ``validation.check_call``) into a plan: every remaining check, in the contract's order."""
    spatials = validate_spatials(o.spatials)
    fmt = normalize_format(o.format)
    lay, path = resolve_target(
        out=o.out, layout=o.layout, out_dir=o.out_dir, out_path=o.out_path, fmt=fmt
    )
    final_names = validate_names(o.names, len(spatials))
    temporal = validate_temporal(o.temporal)
    per_place = validate_temporals(o.temporals, len(spatials), temporal)
    output = validate_output(o.output if o.output is not None else OutputSpec.pooled())
    validate_format_combination(fmt, lay, output, bool(o.save_inputs))
    dtype = check_dtype(o.dtype)
    if dtype not in get_format(fmt).dtypes:
        raise ModelError(
            f"format={fmt!r} cannot store dtype={dtype!r} vectors: use dtype one of "
            f"{', '.join(get_format(fmt).dtypes)} (CLI --dtype), or another format."
        )
    if o.sensor is not None and not isinstance(o.sensor, SensorSpec):
        raise ModelError("sensor must be a SensorSpec or None.")
    prep = resolve_input_prep(o.input_prep)
    reqs = resolve_models(
        o.models,
        sensor=o.sensor,
        per_model_sensors=o.per_model_sensors,
        weights=o.weights,
        model_configs=o.model_configs,
        output=output,
        fetch=o.fetch,
        modality=o.modality,
        per_model_fetches=o.per_model_fetches,
        per_model_modalities=o.per_model_modalities,
    )
    check_model_requests(reqs, per_place if per_place is not None else [temporal], spatials)
    reqs, groups = build_groups(reqs)
    b = resolve_backend(o.backend, o.source, fetches=bool(groups))
    dev = str(o.device).strip().lower() if o.device else "auto"
    if not (dev in ("auto", "cpu", "cuda", "mps") or dev.startswith("cuda:")):
        raise ModelError(f"Unknown device {o.device!r}: use 'auto', 'cpu' or 'cuda'.")
    check_writable(lay, path, get_format(fmt).directory_store)
    check_output_location(lay, path)
    if b == "local":
        check_source(o.source)
    popts = dict(o.provider_options or {})
    if b == "local" and o.source:
        popts["source"] = str(Path(o.source).expanduser().resolve())
    plan = ExportPlan(
        layout=lay,
        format=fmt,
        out_path=path,
        names=final_names,
        spatials=spatials,
        temporal=temporal,
        temporals=per_place,
        output=output,
        models=reqs,
        groups=groups,
        backend=b,
        provider_options=popts,
        provider_target=provider_target(b),
        device=dev,
        input_prep=prep,
        input_prep_given=o.input_prep,
        save_inputs=bool(o.save_inputs),
        save_embeddings=bool(o.save_embeddings),
        save_manifest=bool(o.save_manifest),
        run=RunOptions.of(o),
        dtype=dtype,
    )
    check_patch_sizes(plan)
    check_name_lengths(plan)
    if b == "local" and o.source:
        check_not_inputs(plan, [("raster source", o.source)])
    check_existing_format(plan)
    return plan
