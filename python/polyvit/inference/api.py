"""polyvit.predict: the dataset-scale job as a Python API, shared by vit-predict.

    model = polyvit.load("vit_s32.safetensors", backend="cpp", precision="int8")
    for row in polyvit.predict(["photos/", "more/*.jpg"], model, topk=5):
        print(row["path"], row["topk_labels"][0], row["error"])
    table = polyvit.predict_table("photos/", model)      # a pyarrow.Table, the same rows
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from .. import backends
from ..config import ViTConfig
from ..model import Model, build, resolve_weights
from .inputs import expand_inputs
from .output import arrow_table
from .pipeline import Stats, run_local


def check_topk(topk: int, num_classes: int) -> None:
    if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= num_classes:
        raise ValueError(f"topk={topk!r} is out of range: the model has {num_classes} classes; "
                         f"pick 1 to {num_classes}")


def _paths(inputs: str | Iterable[str]) -> list[str]:
    return expand_inputs([inputs] if isinstance(inputs, str) else [str(i) for i in inputs])


def predict(inputs: str | Iterable[str], model: Model, *, topk: int = 5, batch_size: int = 32,
            crops: str = "center", draft: bool = True, workers: int | None = None,
            worker_kind: str = "thread", stats: Stats | None = None) -> Iterator[dict[str, Any]]:
    """Rows for every image of `inputs` (files, folders, globs, list files), in input order.

    Each row: path, topk_indices, topk_labels, topk_probs, error ("" when classified), and
    `features` when the model was loaded with features=True. Broken images give error rows;
    nothing raises for them."""
    check_topk(topk, model.config.num_classes)
    for rows in run_local(model, _paths(inputs), batch_size=batch_size, topk=topk,
                          features=bool(model.feature_dim), crops=crops, draft=draft,
                          workers=workers, worker_kind=worker_kind, stats=stats):
        yield from rows


def predict_table(inputs: str | Iterable[str], model: Model, **kwargs: Any):
    """predict()'s rows as one pyarrow.Table (every row in memory: for large jobs iterate
    predict() or use vit-predict, which writes in chunks)."""
    return arrow_table(list(predict(inputs, model, **kwargs)), bool(model.feature_dim))


@dataclass
class Job:
    """One vit-predict job: the model's description, checked once, run by either engine."""
    weights: str | None = None
    backend: str = "cpp"
    precision: str = "fp32"
    options: dict[str, Any] = field(default_factory=dict)
    config: str | None = None
    num_heads: int | None = None
    topk: int = 5
    batch_size: int = 32
    features: bool = False
    crops: str = "center"
    draft: bool = True
    workers: int | None = None
    worker_kind: str = "thread"
    image_size: int | None = None
    model_config: ViTConfig | None = None

    def check(self) -> None:
        """Options, backend, weights and topk, before any image is read."""
        backends.backend_class(self.backend).check_arguments(self.precision, self.options)
        backends.require(self.backend)
        cfg, tensors, source = resolve_weights(self.weights, self.config, self.num_heads,
                                               self.image_size)
        check_topk(self.topk, cfg.num_classes)
        self.model_config, self._resolved = cfg, (cfg, tensors, source)

    def model(self) -> Model:
        if self.model_config is None:
            self.check()
        cfg, tensors, source = self._resolved
        return build(self.backend, cfg, tensors, source, self.precision, self.features,
                     **self.options)

    def run_local(self, paths: list[str], stats: Stats | None = None
                  ) -> Iterator[list[dict[str, Any]]]:
        yield from run_local(self.model(), paths, batch_size=self.batch_size, topk=self.topk,
                             features=self.features, crops=self.crops, draft=self.draft,
                             workers=self.workers, worker_kind=self.worker_kind, stats=stats)

    def run_ray(self, paths: list[str], stats: Stats | None = None, address: str | None = None,
                actors: int = 1) -> Iterator[list[dict[str, Any]]]:
        from .ray_engine import run_ray

        if self.model_config is None:
            self.check()
        self._resolved = None  # each actor loads the weights itself
        yield from run_ray(paths, self.model_config, weights=self.weights, backend=self.backend,
                           precision=self.precision, options=self.options,
                           batch_size=self.batch_size, topk=self.topk, features=self.features,
                           crops=self.crops, draft=self.draft, actors=actors, address=address,
                           preset=self.config, num_heads=self.num_heads,
                           image_size=self.image_size, stats=stats)
