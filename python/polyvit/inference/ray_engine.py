"""The Ray Data engine: the same job as the local engine, spread over a Ray cluster.

    paths (pos, path) ──► map_batches(decode_batch)            tasks: decode + preprocess
                      ──► map_batches(Classifier, ActorPoolStrategy)  one polyvit model per actor
                      ──► rows streamed back to the driver in input order (preserve_order),
                          written by the same RowWriter as the local engine

vit-eval --engine ray runs the same two stages with Scorer in place of Classifier (labels in,
each image's five best classes and p(label) out; run_ray_scores). Every worker reads the images
and the weights itself: paths must be readable on every node (a shared filesystem or the same
layout everywhere). Users who already have a ray.data.Dataset of paths use decode_batch and
Classifier directly (docs/predict.md).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any, Iterator, Sequence

import numpy as np

from ..backends._native import cores, sleep_at_barriers
from ..config import ViTConfig
from ..errors import PolyvitError
from ..preprocessing import normalize, prepare
from .pipeline import Stats, classify_batch, decode_chunk, error_kind
from .output import arrow_table

CONNECT_TIMEOUT_S = 5.0
# Logical CPUs reserved per model actor and per decode task. The actor's backend still runs its
# own thread count (the node's cores unless threads= is given); the reservations only bound how
# many actors and decode tasks share a node. Actors must leave room for decoding, or Ray Data
# would wait forever for a decode slot (checked in check_resources). The two differ on purpose:
# Ray Data fuses consecutive map stages with equal resource requests, which would move decoding
# into the actors, serialised with the model instead of overlapping it.
ACTOR_CPUS = 0.5
DECODE_CPUS = 0.25
BLOCK_ROWS = 256
MODEL_SECONDS = "_model_seconds"


class RayError(PolyvitError, RuntimeError):
    """Ray is not installed, or the cluster cannot be reached."""


def import_ray():
    """ray, imported after the SYCL runtime's environment is set: `import ray` imports dpctl
    (to look for Intel GPUs), and the sycl backend finds no device once dpctl loaded without it."""
    from ..backends.sycl_backend import prepare_environment

    prepare_environment()
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayError("--engine ray needs Ray Data: pip install 'polyvit[ray]' "
                       "(or pip install 'ray[data]')") from None
    return ray


def connect(address: str | None, num_cpus: int | None = None):
    """ray.init: the cluster at `address` (or RAY_ADDRESS), else a new local one sized to this
    machine. An unreachable address is a RayError within CONNECT_TIMEOUT_S, never a hang."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "auto":
        _check_reachable(address)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = num_cpus or os.cpu_count()
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayError(f"cannot start or join the Ray cluster{f' at {address}' if address else ''}: "
                       f"{exc}") from None
    return ray


def _check_reachable(address: str) -> None:
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise RayError(f"--ray-address {address!r}: expected host:port (e.g. 10.0.0.5:6379), "
                       "ray://host:port, or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise RayError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); check "
                       "the address and that the head node is running (ray start --head)") from None


# ---- the two stages ------------------------------------------------------------------------------

def decode_batch(batch: dict[str, np.ndarray], config: ViTConfig, crops: str = "center",
                 draft: bool = True) -> dict[str, np.ndarray]:
    """{pos, path | pixels, ...} -> {pos, path, image, error, ...}: image holds the uint8 crops
    (a quarter of the float input's bytes through the object store); a broken image gets zeros
    and its error. Images come as file paths, or as in-memory uint8 arrays in `pixels` (a
    dataset held as arrays, named "item POS"); other columns (a label) pass through."""
    if "pixels" in batch:
        items = list(batch["pixels"])
        names = [f"item {int(p)}" for p in batch["pos"]]
    else:
        items = names = [str(p) for p in batch["path"]]
    decoded = decode_chunk(items, config, crops, draft, step=prepare, names=names)
    shape = ((5,) if crops == "five" else ()) + (config.image_size, config.image_size, 3)
    images = np.zeros((len(items), *shape), np.uint8)
    for i, (array, _) in enumerate(decoded):
        if array is not None:
            images[i] = array
    passed = {k: v for k, v in batch.items() if k not in ("path", "pixels")}
    return {**passed, "path": np.asarray(names, dtype=object), "image": images,
            "error": np.asarray([e for _, e in decoded], dtype=object)}


class Classifier:
    """A Ray Data callable class: one polyvit model per actor, loaded once in __init__."""

    def __init__(self, weights: str | None, backend: str = "cpp", precision: str = "fp32",
                 topk: int = 5, features: bool = False, crops: str = "center",
                 config: str | None = None, num_heads: int | None = None,
                 options: dict[str, Any] | None = None, image_size: int | None = None) -> None:
        import polyvit

        sleep_at_barriers()  # the actor shares its node's cores with the decode tasks
        options = dict(options or {})
        backend_options = polyvit.backends.backend_class(backend).option_names()
        if "threads" in backend_options and not options.get("threads"):
            # Ray sets OMP_NUM_THREADS=1 for fractional reservations: use the node's cores
            options["threads"] = cores()
        self.model = polyvit.load(weights, backend=backend, precision=precision, config=config,
                                  num_heads=num_heads, features=features,
                                  image_size=image_size, **options)
        self.topk, self.features, self.crops = topk, features, 5 if crops == "five" else 1
        self.labels = self.model.class_names()

    def __call__(self, batch: dict[str, np.ndarray]):
        """A numpy batch {pos, path, image, error} -> a pyarrow table of rows (pos first)."""
        import pyarrow as pa

        errors = [str(e) for e in batch["error"]]
        items = [(str(p), None if e else normalize(image, self.model.config), e)
                 for p, image, e in zip(batch["path"], batch["image"], errors)]
        stats = Stats()
        rows = classify_batch(self.model, items, self.topk, self.labels, self.features,
                              self.crops, stats)
        table = arrow_table(rows, self.features)
        table = table.add_column(0, "pos", pa.array(np.asarray(batch["pos"], dtype=np.int64)))
        # the batch's forward time, on its first row: the driver sums it for the summary
        model_s = np.zeros(len(rows))
        model_s[0] = stats.model
        return table.append_column(MODEL_SECONDS, pa.array(model_s))


class Scorer(Classifier):
    """A Ray Data callable class for vit-eval: per image, the k best classes and p(label) of
    the softmax (averaged over five crops), computed as evaluation.evaluate computes them."""

    def __init__(self, weights: str | None, k: int, **kwargs: Any) -> None:
        super().__init__(weights, topk=k, **kwargs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..evaluation import top_and_p_label
        from .pipeline import probabilities

        errors = np.asarray([str(e) for e in batch["error"]], dtype=object)
        ok = np.flatnonzero(errors == "")
        labels = np.asarray(batch["label"], dtype=np.int64)
        top = np.zeros((len(errors), self.topk), np.int64)
        p_label = np.zeros(len(errors), np.float64)
        model_s = np.zeros(len(errors))
        if len(ok):
            x = normalize(np.asarray(batch["image"])[ok], self.model.config)
            start = time.perf_counter()
            logits = self.model(x.reshape(-1, *x.shape[-3:]))
            model_s[0] = time.perf_counter() - start
            top[ok], p_label[ok] = top_and_p_label(probabilities(logits, self.crops),
                                                   labels[ok], self.topk)
        return {"pos": batch["pos"], "path": batch["path"], "error": errors, "label": labels,
                "top": top, "p_label": p_label, MODEL_SECONDS: model_s}


def _actor_environment(backend: str) -> dict[str, Any] | None:
    """A Ray worker imports dpctl as it starts (Ray looks for Intel GPUs), before polyvit can
    set the SYCL runtime's environment: hand it over from the driver instead."""
    if backend != "sycl":
        return None
    from ..backends.sycl_backend import prepare_environment

    prepare_environment()
    env = {k: os.environ[k] for k in ("OCL_ICD_FILENAMES",) if k in os.environ}
    return {"env_vars": env} if env else None


def check_resources(ray, actors: int) -> None:
    """Refuse a job the cluster cannot schedule (it would wait forever, not fail)."""
    cpus = ray.cluster_resources().get("CPU", 0)
    need = actors * ACTOR_CPUS + DECODE_CPUS
    if cpus < need:
        raise RayError(f"the Ray cluster has {cpus:g} CPU(s); {actors} model actor(s) need "
                       f"{need:g} with room to decode ({ACTOR_CPUS:g} per actor, {DECODE_CPUS:g} "
                       f"per decode task): use --ray-actors {max(1, int((cpus - DECODE_CPUS) / ACTOR_CPUS))} "
                       "or fewer, or a larger cluster")


# ---- the job ----------------------------------------------------------------------------------

def block_slices(n: int, actors: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, rows) of the blocks the n inputs are cut into. A block is decoded by one task
    and classified once it is whole: the first blocks are small (a batch per actor, then
    doubling) so the models start within a fraction of a second of the first decode task; the
    rest are large, which costs less per row (measured on 2000 JPEGs: 256 rows beat 64)."""
    steady = max(4, min(BLOCK_ROWS, -(-n // (8 * actors))))
    if n == 0:
        return [(0, 0)]  # one empty block: the job still runs (and writes its empty output)
    slices, start, size = [], 0, min(batch_size, steady)
    while start < n:
        for _ in range(actors):  # one block of each size per actor
            rows = min(size, n - start)
            if rows > 0:
                slices.append((start, rows))
                start += rows
        size = min(steady, 2 * size)
    return slices


def _start(address: str | None, actors: int):
    """Ray, connected, with the data context every job here uses."""
    ray = connect(address)
    check_resources(ray, actors)
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # the job's progress is reported by ours
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # rows come back in the order of `pos`
    ctx.enable_progress_bars = False
    return ray


def _pipeline(ray, columns: dict[str, Any], n: int, config: ViTConfig, *, model_class: type,
              model_kwargs: dict[str, Any], backend: str, actors: int, batch_size: int,
              crops: str, draft: bool, decode_batch_size: int, decode_tasks: int | None):
    """from_arrow(blocks of `columns`) -> decode tasks -> `model_class` actors."""
    import pyarrow as pa

    if decode_tasks is None:
        # as many decode tasks as the local engine has workers per model, cluster-wide: more
        # only oversubscribe the cores the models run on
        decode_tasks = max(1, min(int(ray.cluster_resources().get("CPU", 1)), 2 * actors))
    table = pa.table({"pos": pa.array(range(n), pa.int64()), **columns})
    ds = ray.data.from_arrow([table.slice(i, size)
                              for i, size in block_slices(n, actors, batch_size)])
    ds = ds.map_batches(decode_batch, batch_size=decode_batch_size, batch_format="numpy",
                        fn_kwargs={"config": config, "crops": crops, "draft": draft},
                        compute=ray.data.TaskPoolStrategy(size=decode_tasks),
                        num_cpus=DECODE_CPUS)
    return ds.map_batches(
        model_class, batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors), fn_constructor_kwargs=model_kwargs,
        num_cpus=ACTOR_CPUS, num_gpus=1 if backend == "cuda" else 0,
        runtime_env=_actor_environment(backend))


def run_ray(paths: Sequence[str], config: ViTConfig, *, weights: str | None, backend: str,
            precision: str, options: dict[str, Any], batch_size: int = 32, topk: int = 5,
            features: bool = False, crops: str = "center", draft: bool = True,
            actors: int = 1, address: str | None = None, decode_batch_size: int = 16,
            decode_tasks: int | None = None,
            preset: str | None = None, num_heads: int | None = None,
            image_size: int | None = None, stats: Stats | None = None
            ) -> Iterator[list[dict[str, Any]]]:
    """Rows of the job, in input order, as lists (one per block Ray hands back)."""
    import pyarrow as pa

    stats = stats if stats is not None else Stats()
    stats.model_slots, stats.waiting_known = actors, False
    ray = _start(address, actors)
    start = time.perf_counter()
    ds = _pipeline(ray, {"path": pa.array(list(paths), pa.string())}, len(paths), config,
                   model_class=Classifier,
                   model_kwargs={"weights": weights, "backend": backend, "precision": precision,
                                 "topk": topk, "features": features, "crops": crops,
                                 "config": preset, "num_heads": num_heads, "options": options,
                                 "image_size": image_size},
                   backend=backend, actors=actors, batch_size=batch_size, crops=crops,
                   draft=draft, decode_batch_size=decode_batch_size, decode_tasks=decode_tasks)
    columns = ["path", "topk_indices", "topk_labels", "topk_probs", "error"] + \
        (["features"] if features else [])
    expected = 0
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        data = batch.select(["pos", MODEL_SECONDS, *columns]).to_pydict()
        stats.model += sum(data[MODEL_SECONDS])
        if data["pos"] and data["pos"][0] != expected:
            raise RayError(f"Ray returned rows out of order (row {data['pos'][0]} where "
                           f"{expected} was due); this is a bug, please report it")
        expected += len(data["pos"])
        rows = [{c: data[c][i] for c in columns} for i in range(len(data["pos"]))]
        for r in rows:
            if r["error"]:
                stats.errors += 1
                stats.error_kinds[error_kind(r["error"])] += 1
            else:
                stats.classified += 1
        stats.rows += len(rows)
        stats.wall = time.perf_counter() - start
        yield rows
    stats.wall = time.perf_counter() - start


def run_ray_scores(data: Any, config: ViTConfig, *, weights: str, backend: str, precision: str,
                   options: dict[str, Any], crops: str = "center", batch_size: int = 64,
                   k: int = 5, actors: int = 1, address: str | None = None,
                   num_heads: int | None = None, image_size: int | None = None,
                   decode_batch_size: int = 16, decode_tasks: int | None = None
                   ) -> Iterator[dict[str, Any]]:
    """vit-eval's job on Ray: a labelled dataset (datasets.LabelledImages: paths, or one uint8
    array of images) -> batches of {top (n, k), p_label (n,), labels (n,), skipped [(item,
    reason)], model_seconds} for the images scored, decoded as evaluate() decodes (no draft)."""
    import pyarrow as pa

    ray = _start(address, actors)
    if isinstance(data.items, np.ndarray):
        from ray.data.extensions import ArrowTensorArray

        images = {"pixels": ArrowTensorArray.from_numpy(np.ascontiguousarray(data.items))}
    else:
        images = {"path": pa.array([str(p) for p in data.items], pa.string())}
    columns = {"label": pa.array(np.asarray(data.labels, np.int64)), **images}
    ds = _pipeline(ray, columns, len(data), config, model_class=Scorer,
                   model_kwargs={"weights": weights, "k": k, "backend": backend,
                                 "precision": precision, "crops": crops,
                                 "num_heads": num_heads, "options": options,
                                 "image_size": image_size},
                   backend=backend, actors=actors, batch_size=batch_size, crops=crops,
                   draft=False, decode_batch_size=decode_batch_size, decode_tasks=decode_tasks)
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        errors = np.asarray([str(e) for e in batch["error"]], dtype=object)
        ok = errors == ""
        yield {"top": np.asarray(batch["top"])[ok], "p_label": np.asarray(batch["p_label"])[ok],
               "labels": np.asarray(batch["label"], np.int64)[ok],
               "skipped": [(str(p), str(e)) for p, e in zip(batch["path"][~ok], errors[~ok])],
               "model_seconds": float(np.sum(batch[MODEL_SECONDS]))}
