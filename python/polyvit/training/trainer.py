"""vit-train's loop: data, model, optimizer and schedule from one TrainConfig, run to the end
(or to early stopping), checkpointed so that nothing is lost when it stops.

    from polyvit.training import train, TrainConfig
    results = train(TrainConfig(epochs=5), "runs/digits")

The order of things in one optimizer step, the same on every process of a DDP run:
  1. the global batch's indices come from a DistributedSampler (seed + epoch; drop_last);
  2. every process augments the *whole* global batch (the dataset is in memory) with the shared
     augmentation generator, then keeps its own contiguous rows: so the augmentation and the
     mixup pairs do not depend on how many processes share the batch, and two processes compute
     what one process computes with accum_steps=2;
  3. accum_steps micro-batches: forward (autocast when amp is set), loss scaled by 1/accum,
     backward (DDP all-reduces the gradients on the last micro-batch);
  4. a non-finite loss stops the run, naming the step; last.pt keeps the last good state;
  5. clip, optimizer step (through the GradScaler under fp16), schedule, weight average.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import weights as wfmt
from ..config import ViTConfig, get_config
from ..datasets import LabelledImages, open_dataset
from ..errors import ConfigError, DatasetError, TrainingError
from . import checkpoint, logs
from .adamw8bit import fp32_adam_state_bytes, optimizer_state_bytes
from .augment import Augmenter, AugmentSettings
from .config import RESUMABLE_CHANGES, TrainConfig
from .data import DecodedSplit, decode
from .distributed import Dist, setup, teardown
from .ema import WeightAverage
from .model import TrainableViT, no_weight_decay
from .schedule import warmup_cosine

LAST, BEST = "last.pt", "model.safetensors"


def say(d: Dist, *parts: Any, end: str = "\n") -> None:
    if d.main:
        print(*parts, end=end, flush=True)


# ---- preparing a run --------------------------------------------------------------------------

def check_output_folder(out: Path) -> None:
    """Refuse an output folder that cannot be written before any work is done."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise TrainingError(f"{out}: cannot write the output folder ({exc.strerror or exc}); "
                            "choose another --out") from None


def open_splits(cfg: TrainConfig) -> dict[str, LabelledImages]:
    """train and val (both required), test when the dataset has one."""
    splits = {"train": open_dataset(cfg.data, "train"), "val": open_dataset(cfg.data, "val")}
    try:
        splits["test"] = open_dataset(cfg.data, "test")
    except DatasetError as exc:
        if "split" not in str(exc):  # a damaged test split is an error, an absent one is not
            raise
    classes = splits["train"].classes
    for name, split in splits.items():
        if split.classes != classes:
            raise DatasetError(f"{cfg.data}: the {name} split's classes differ from train's")
    return splits


def model_config(cfg: TrainConfig, num_classes: int) -> tuple[ViTConfig, dict | None, str]:
    """(architecture, starting weights or None, where they came from) for the run."""
    if not cfg.init:
        arch = get_config(cfg.model).replace(num_classes=num_classes)
        if cfg.image_size:
            from ..resize import check_image_size

            check_image_size(arch, cfg.image_size)
            arch = arch.replace(image_size=cfg.image_size)
        return arch, None, f"{cfg.model}, from scratch (seed {cfg.seed})"
    from ..convert import import_checkpoint
    from ..resize import at_image_size

    arch, tensors, layout = import_checkpoint(cfg.init)
    source = f"{cfg.init} ({layout}, {arch.name})"
    if cfg.image_size and cfg.image_size != arch.image_size:
        arch, tensors = at_image_size(arch, tensors, cfg.image_size)
        source += f", position embedding resampled to {cfg.image_size} px"
    if arch.num_classes != num_classes:
        # a new head for the new classes, initialised as a fresh model's
        source += f", new head of {num_classes} classes"
        arch = arch.replace(num_classes=num_classes)
        fresh = TrainableViT(arch)
        tensors = dict(tensors)
        tensors["head.weight"] = fresh.head.weight.detach().numpy().copy()
        tensors["head.bias"] = fresh.head.bias.detach().numpy().copy()
    return arch, tensors, source


def build_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if no_weight_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    betas = (cfg.beta1, cfg.beta2)
    if cfg.optimizer == "adamw8bit":
        from .adamw8bit import AdamW8bit

        return AdamW8bit(groups, lr=cfg.lr, betas=betas)
    # the fused kernel where torch has one for this device (CUDA, and CPU in recent releases)
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas)


def describe_memory(optimizer, model: nn.Module) -> str:
    params = [p for p in model.parameters() if p.requires_grad]
    have, fp32 = optimizer_state_bytes(optimizer), fp32_adam_state_bytes(params)
    return (f"optimizer state {have / 1e6:.2f} MB (fp32 AdamW holds {fp32 / 1e6:.2f} MB"
            f"{f', {fp32 / max(have, 1):.1f}x more' if have < fp32 else ''})")


# ---- the run ----------------------------------------------------------------------------------

class Run:
    """One training run in an output folder: built from a config, or restored from last.pt."""

    def __init__(self, cfg: TrainConfig, out: Path, d: Dist, state: dict | None) -> None:
        self.cfg, self.out, self.d = cfg, out, d
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        splits = open_splits(cfg)
        self.classes = splits["train"].classes
        if state is not None and state["classes"] != self.classes:
            raise TrainingError(f"{out / LAST}: the checkpoint was trained on other classes "
                                f"than {cfg.data} has now")
        self.arch, start, self.source = model_config(cfg, len(self.classes))
        say(d, f"model: {self.source}")
        self.data: dict[str, DecodedSplit] = {}
        for name, split in splits.items():
            self.data[name] = decode(split, self.arch, cfg.workers, progress=cfg.progress and d.main)
            skipped = self.data[name].skipped
            say(d, f"data: {split.describe()}"
                   + (f"; {len(skipped)} unreadable image(s) skipped" if skipped else ""))
            for item, reason in skipped[:5]:
                say(d, f"  skipped {item}: {reason}")
        self.per_process = cfg.batch_size // d.world
        if cfg.batch_size % (d.world * cfg.accum_steps):
            raise ConfigError(f"batch_size {cfg.batch_size} must be a multiple of the process "
                              f"count x accum_steps ({d.world} x {cfg.accum_steps})")
        n_train = len(self.data["train"])
        if n_train < cfg.batch_size:
            raise DatasetError(f"the train split has {n_train} readable images, fewer than one "
                               f"batch (batch_size {cfg.batch_size})")
        self.steps_per_epoch = n_train // cfg.batch_size
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.warmup_steps = round(cfg.warmup_epochs * self.steps_per_epoch)

        self.net = TrainableViT(self.arch, cfg.drop, cfg.attn_drop, cfg.drop_path).to(d.device)
        if start is not None:
            self.net.load_weights(start)
            self.net.to(d.device)
        if cfg.freeze_backbone:
            for name, p in self.net.named_parameters():
                p.requires_grad_(name.startswith("head."))
        self.optimizer = build_optimizer(cfg, self.net, d.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, self.warmup_steps, self.total_steps))
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
        self.average = WeightAverage(self.net, cfg.ema) if cfg.ema else None
        self.augment = Augmenter(AugmentSettings(
            crop_scale=(cfg.crop_scale, 1.0), crop_ratio=(1 / cfg.crop_ratio, cfg.crop_ratio),
            hflip=cfg.hflip, rotate=cfg.rotate, color_jitter=cfg.color_jitter,
            randaugment_ops=cfg.randaugment_ops, randaugment_magnitude=cfg.randaugment_magnitude,
            mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing),
            self.arch.preprocessing.mean, self.arch.preprocessing.std, len(self.classes))
        self.gen = torch.Generator().manual_seed(cfg.seed)
        # progress
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.epoch_loss = 0.0            # sum of per-step losses of the current epoch
        self.best_top1 = -1.0
        self.best_epoch = 0
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []
        self.losses: list[float] = []    # every optimizer step's loss (the loss curve)
        self.elapsed = 0.0
        if state is not None:
            self.restore(state)

        runner: nn.Module = self.net
        if cfg.compile:
            runner = torch.compile(runner)
        if d.active:
            from torch.nn.parallel import DistributedDataParallel

            runner = DistributedDataParallel(
                runner, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
        self.runner = runner

    # ---- state ----

    def state(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(), "arch": self.arch.to_json(), "classes": self.classes,
            "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "average": self.average.state_dict() if self.average else None,
            "rng": checkpoint.rng_state(self.d.device), "augment_rng": self.gen.get_state(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "epoch_loss": self.epoch_loss, "best_top1": self.best_top1,
            "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
            "history": self.history, "losses": self.losses, "elapsed": self.elapsed,
        }

    def restore(self, s: dict[str, Any]) -> None:
        if s["arch"] != self.arch.to_json():
            raise TrainingError(f"{self.out / LAST}: the checkpoint's model differs from the "
                                "config's; resume with the config it was written with")
        self.net.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.scheduler.load_state_dict(s["scheduler"])
        self.scaler.load_state_dict(s["scaler"])
        if self.average is not None and s["average"] is not None:
            self.average.load_state_dict(s["average"])
        checkpoint.set_rng_state(s["rng"], self.d.device)
        self.gen.set_state(s["augment_rng"])
        for k in ("step", "epoch", "batch_in_epoch", "epoch_loss", "best_top1", "best_epoch",
                  "bad_epochs", "history", "losses", "elapsed"):
            setattr(self, k, s[k])

    def save_last(self) -> None:
        bad = [n for n, p in self.net.named_parameters() if not torch.isfinite(p).all()]
        if bad:  # never overwrite the last good state with a diverged one
            raise TrainingError(
                f"non-finite weights ({', '.join(bad[:3])}) after step {self.step}; training "
                f"stopped. {self.out / LAST} keeps the last good state (step "
                f"{self.last_saved_step}). Lower lr= (now {self.cfg.lr})")
        if self.d.main:
            checkpoint.save(self.out / LAST, self.state())
        self.d.barrier()

    # ---- one optimizer step ----

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The global batches of an epoch: DistributedSampler's order for one replica (the
        whole permutation), cut into batch_size runs (train_step gives each process its part)."""
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(range(len(self.data["train"])), num_replicas=1, rank=0,
                                     shuffle=True, seed=self.cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
        order = np.fromiter(iter(sampler), dtype=np.int64)
        b = self.cfg.batch_size
        return [order[i * b:(i + 1) * b] for i in range(self.steps_per_epoch)]

    def autocast(self):
        if self.cfg.amp == "off":
            return nullcontext()
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return torch.autocast(self.d.device.type, dtype=dtype)

    def train_step(self, indices: np.ndarray) -> float:
        cfg, d = self.cfg, self.d
        x, y = self.data["train"].batch(indices, self.arch)
        x, targets = self.augment(torch.from_numpy(x), torch.from_numpy(y), self.gen)
        mine = slice(d.rank * self.per_process, (d.rank + 1) * self.per_process)
        x, targets = x[mine].to(d.device), targets[mine].to(d.device)
        self.net.train()
        micro = self.per_process // cfg.accum_steps
        total = torch.zeros((), dtype=torch.float64)
        for k in range(cfg.accum_steps):
            xs, ts = x[k * micro:(k + 1) * micro], targets[k * micro:(k + 1) * micro]
            last = k == cfg.accum_steps - 1
            sync = nullcontext() if last or not d.active else self.runner.no_sync()
            with sync:
                with self.autocast():
                    logits = self.runner(xs)
                loss = torch.sum(-ts * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
                self.scaler.scale(loss / cfg.accum_steps).backward()
            total += loss.detach().double().cpu() / cfg.accum_steps
        # the step's loss over the whole global batch (one number on every process)
        value = d.sum([float(total)])[0] / d.world
        if not math.isfinite(value):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingError(
                f"the loss is {value} at step {self.step + 1} (epoch {self.epoch + 1}); training "
                f"stopped. {self.out / LAST} keeps the last good state (step "
                f"{self.last_saved_step}). Lower lr= (now {cfg.lr}), keep grad_clip= on, or "
                "use amp=off")
        if cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.average is not None:
            self.average.update(self.net)
        return value

    # ---- evaluation ----

    def eval_net(self) -> nn.Module:
        """The weights evaluated and exported: the weight average when there is one."""
        if self.average is None:
            return self.net
        net = TrainableViT(self.arch).to(self.d.device)
        net.load_state_dict(self.average.shadow)
        return net

    @torch.no_grad()
    def evaluate(self, split: str, net: nn.Module | None = None) -> dict[str, Any]:
        """loss, top-1, top-5 and per-class accuracy on a split, shared over the processes."""
        net = net or self.eval_net()
        net.eval()
        data, d = self.data[split], self.d
        c = len(self.classes)
        k = min(5, c)
        sums = np.zeros(2 + 2 * c)      # loss, top-5 hits, per-class hits, per-class counts
        mine = np.arange(d.rank, len(data), d.world)
        for start in range(0, len(mine), self.cfg.eval_batch_size):
            idx = mine[start:start + self.cfg.eval_batch_size]
            x, y = data.batch(idx, self.arch)
            x, y = torch.from_numpy(x).to(d.device), torch.from_numpy(y).to(d.device)
            with self.autocast():
                logits = net(x).float()
            sums[0] += F.cross_entropy(logits, y, reduction="sum").item()
            top = logits.topk(k, dim=-1).indices
            sums[1] += (top == y[:, None]).any(-1).sum().item()
            hit = (top[:, 0] == y).cpu().numpy()
            np.add.at(sums, 2 + y.cpu().numpy(), hit)
            np.add.at(sums, 2 + c + y.cpu().numpy(), 1)
        sums = np.asarray(d.sum(sums.tolist()))
        n = len(data)
        per_class = sums[2:2 + c] / np.maximum(sums[2 + c:], 1)
        # python floats: last.pt's history is read back with torch.load(weights_only=True)
        return {"loss": float(sums[0] / n), "top1": float(sums[2:2 + c].sum() / n),
                "top5": float(sums[1] / n), "n": n,
                "per_class": {name: float(a) for name, a in zip(self.classes, per_class)}}

    # ---- the loop ----

    @property
    def last_saved_step(self) -> int:
        return self._saved

    def fit(self) -> bool:
        """Train to the last epoch or to early stopping. True when it stopped early."""
        cfg, d = self.cfg, self.d
        self._saved = self.step
        loggers = logs.Loggers(self.out, cfg.to_dict(), cfg.tensorboard and d.main,
                               cfg.wandb and d.main, cfg.wandb_project, self.step > 0) \
            if d.main else None
        stopped_early = False
        try:
            with StopRequests() as self.stop:
                while self.epoch < cfg.epochs:
                    if cfg.patience and self.bad_epochs >= cfg.patience:
                        stopped_early = True
                        break
                    self.run_epoch(loggers)
        finally:
            if loggers is not None:
                loggers.close()
        return stopped_early

    def run_epoch(self, loggers) -> None:
        cfg, d = self.cfg, self.d
        batches = self.batches(self.epoch)
        bar = None
        if d.main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(batches), initial=self.batch_in_epoch, unit="step",
                       desc=f"epoch {self.epoch + 1}/{cfg.epochs}", file=sys.stderr,
                       dynamic_ncols=True)
        start = time.perf_counter()
        seen = 0
        while self.batch_in_epoch < len(batches):
            loss = self.train_step(batches[self.batch_in_epoch])
            self.step += 1
            self.batch_in_epoch += 1
            self.epoch_loss += loss
            self.losses.append(loss)
            seen += cfg.batch_size
            lr = self.optimizer.param_groups[0]["lr"]
            if bar is not None:
                rate = seen / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}")
                bar.update()
            if loggers is not None:
                loggers.step(self.step, {"loss": loss, "lr": lr})
            stop = d.agree(self.stop.requested)  # every process stops at the same step
            if stop or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0
                        and self.batch_in_epoch < len(batches)):
                self.elapsed += time.perf_counter() - start
                start = time.perf_counter()
                self.save_last()
                self._saved = self.step
            if stop:
                if bar is not None:
                    bar.close()
                say(d, f"stopped at step {self.step}; {self.out / LAST} holds it: continue with "
                       f"vit-train --resume {self.out}")
                raise KeyboardInterrupt
        if bar is not None:
            bar.close()
        self.elapsed += time.perf_counter() - start
        val = self.evaluate("val")
        row = {"epoch": self.epoch + 1, "step": self.step,
               "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": self.epoch_loss / len(batches), "val_loss": val["loss"],
               "val_top1": val["top1"], "val_top5": val["top5"],
               "img_per_s": self.step * cfg.batch_size / max(self.elapsed, 1e-9),
               "elapsed_s": self.elapsed}
        self.history.append(row)
        self.epoch += 1
        self.batch_in_epoch = 0
        self.epoch_loss = 0.0
        improved = val["top1"] > self.best_top1
        if improved:
            self.best_top1, self.best_epoch, self.bad_epochs = val["top1"], self.epoch, 0
            self.export_best()
        else:
            self.bad_epochs += 1
        if d.main:
            logs.write_metrics(self.out / "metrics.csv", self.history)
            if loggers is not None:
                loggers.epoch(self.step, {k: row[k] for k in ("train_loss", "val_loss",
                                                              "val_top1", "val_top5")})
            if not cfg.progress or self.epoch % max(1, cfg.epochs // 20) == 0 or improved:
                print(f"epoch {self.epoch:3d}/{cfg.epochs}  step {self.step}  "
                      f"train loss {row['train_loss']:.4f}  val loss {val['loss']:.4f}  "
                      f"val top-1 {100 * val['top1']:.2f}%{'  *' if improved else ''}", flush=True)
        self.save_last()
        self._saved = self.step

    def export_best(self) -> None:
        if self.d.main:
            wfmt.save(self.out / BEST, self.arch, self.eval_net().export_weights(),
                      source=f"vit-train on {self.cfg.data}: {self.source}, best val top-1 "
                             f"{100 * self.best_top1:.2f}% at epoch {self.best_epoch}",
                      labels=self.classes, extra={"train_config": self.cfg.to_json()})
        self.d.barrier()

    def finish(self, stopped_early: bool) -> dict[str, Any]:
        """Evaluate the best weights on val and test; write results.json and curves.png."""
        cfg, d = self.cfg, self.d
        _, best = wfmt.load(self.out / BEST)
        net = TrainableViT(self.arch).to(d.device)
        net.load_weights(best)
        net.to(d.device)
        results: dict[str, Any] = {
            "data": cfg.data, "model": self.arch.name, "source": self.source,
            "classes": self.classes, "params": sum(p.numel() for p in self.net.parameters()),
            "epochs_run": self.epoch, "steps": self.step, "stopped_early": stopped_early,
            "best_epoch": self.best_epoch, "train_time_s": round(self.elapsed, 2),
            "train_img_per_s": round(self.step * cfg.batch_size / max(self.elapsed, 1e-9), 1),
            "processes": d.world, "device": str(d.device),
            "skipped_images": {k: len(v.skipped) for k, v in self.data.items()},
            "weights": str(self.out / BEST), "config": cfg.to_dict(),
            "optimizer": cfg.optimizer, "optimizer_state_bytes": optimizer_state_bytes(self.optimizer),
        }
        for split in ("val", "test"):
            if split in self.data:
                m = self.evaluate(split, net)
                results.update({f"{split}_top1": m["top1"], f"{split}_top5": m["top5"],
                                f"{split}_loss": m["loss"], f"{split}_n": m["n"],
                                f"{split}_per_class": m["per_class"]})
        if d.main:
            logs.write_json(self.out / "results.json", results)
            logs.plot_curves(self.out / "curves.png", self.history)
        return results


class StopRequests:
    """Ctrl-C and SIGTERM during training ask the loop to stop after the current step (which
    then writes last.pt), instead of interrupting a step half done. A second Ctrl-C interrupts
    at once. Outside the main thread (no signals there) it does nothing."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step (Ctrl-C again to stop at once)", file=sys.stderr,
              flush=True)

    def __enter__(self) -> "StopRequests":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# ---- entry points -----------------------------------------------------------------------------

def train(cfg: TrainConfig, out: str | os.PathLike, *, resume: bool = False,
          overrides: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume) a training run in `out`; returns the results (also in results.json).

    resume=True: continue the run in `out` from last.pt; `overrides` may only change the keys
    that do not alter what a step computes (RESUMABLE_CHANGES), e.g. epochs=."""
    out = Path(out)
    state = None
    if resume:
        state = checkpoint.load(out / LAST)
        saved = TrainConfig.from_dict(state["config"])
        cfg, named = saved.override(overrides or [])
        changed = [k for k in saved.differences(cfg) if k not in RESUMABLE_CHANGES]
        if changed:
            raise TrainingError(f"{out / LAST} is a checkpoint of another config: "
                                f"{', '.join(f'{k}={getattr(saved, k)!r}' for k in changed)}; "
                                f"a resumed run may change only {', '.join(RESUMABLE_CHANGES)}")
    elif (out / LAST).exists():
        raise TrainingError(f"{out} already holds a run ({LAST}); continue it with --resume "
                            f"{out}, or choose another --out")
    if cfg.wandb:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError("wandb=true needs the wandb package (pip install wandb)") from None
    if cfg.amp == "fp16" and not (cfg.device == "cuda" or
                                  (cfg.device == "auto" and torch.cuda.is_available())):
        raise ConfigError("amp=fp16 runs on CUDA (with a GradScaler); on a CPU use amp=bf16")
    d = setup(cfg.device)
    try:
        if d.main:
            check_output_folder(out)
        d.barrier()
        say(d, ("resuming " + str(out / LAST) + f" at step {state['step']}\n") if state else "",
            end="")
        say(d, "vit-train config (* = changed from the default):\n" + cfg.describe())
        run = Run(cfg, out, d, state)
        say(d, f"{sum(p.numel() for p in run.net.parameters()):,} parameters, "
               f"{run.steps_per_epoch} steps per epoch, {d.world} process(es) on {d.device}")
        stopped_early = run.fit()
        say(d, describe_memory(run.optimizer, run.net))
        if stopped_early:
            say(d, f"early stop: no better val top-1 for {cfg.patience} epochs "
                   f"(best {100 * run.best_top1:.2f}% at epoch {run.best_epoch})")
        results = run.finish(stopped_early)
        if "test_top1" in results:
            say(d, f"test top-1 {100 * results['test_top1']:.2f}%  top-5 "
                   f"{100 * results['test_top5']:.2f}%  ({results['test_n']} images)")
        say(d, f"wrote {out / BEST}, {out / LAST}, metrics.csv, curves.png, results.json "
               f"({results['train_time_s']:.0f} s of training)")
        return results
    finally:
        teardown(d)
