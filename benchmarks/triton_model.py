"""The triton backend's whole forward against the ViTs people run on a GPU, same weights, same
process, interleaved rounds (polyvit.bench.rounds), median reported.

    python benchmarks/triton_model.py --json triton_model.json       # a GPU: batch 1 32 256 1024
    TRITON_INTERPRET=1 python benchmarks/triton_model.py --smoke     # any machine: runs, measures nothing

Runners (each where its package is installed; a missing one is reported, not an error):
  polyvit triton fp32 / bf16   model.impl.run on device tensors (one CUDA graph per batch size)
  polyvit cuda fp32 / bf16     the hand-written CUDA backend, device input and output
  HF eager / compile           transformers' ViTForImageClassification with these weights
                               (fp32, or bf16 under autocast), torch.compile default mode
  timm eager / compile         timm's VisionTransformer (the names polyvit's weights use)
  torch eager / compile        the project's idiomatic torch ViT (polyvit.bench.torch_peer)
Every runner's logits are compared with polyvit triton fp32's first: the peers must compute the
same function. Ratios are the peer's time over polyvit triton's in the same precision (above 1:
triton is faster). Goal on an H100/H200: faster than HF eager at every batch size, and at least
torch.compile's throughput at batch >= 256 in bf16. --smoke runs a tiny config under Triton's
interpreter on the CPU so CI checks the script and the weight mappings; its times mean nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time

import numpy as np


# transformers renamed ViT's blocks in 5.0: {ours: (before 5.0, 5.0 and later)} per block
HF_BLOCK_NAMES = {"attn.proj": ("attention.output.dense", "attention.o_proj"),
                  "mlp.fc1": ("intermediate.dense", "mlp.fc1"),
                  "mlp.fc2": ("output.dense", "mlp.fc2"),
                  "norm1": ("layernorm_before", "layernorm_before"),
                  "norm2": ("layernorm_after", "layernorm_after")}
HF_QKV_NAMES = (("attention.attention.query", "attention.attention.key", "attention.attention.value"),
                ("attention.q_proj", "attention.k_proj", "attention.v_proj"))


def hf_state_dict(cfg, weights, new_names: bool):
    """polyvit's (timm's) names -> transformers ViTForImageClassification's."""
    import torch

    d, which = cfg.embed_dim, int(new_names)
    t = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in weights.items()}
    out = {"vit.embeddings.cls_token": t["cls_token"],
           "vit.embeddings.position_embeddings": t["pos_embed"],
           "vit.embeddings.patch_embeddings.projection.weight": t["patch_embed.proj.weight"],
           "vit.embeddings.patch_embeddings.projection.bias": t["patch_embed.proj.bias"],
           "vit.layernorm.weight": t["norm.weight"], "vit.layernorm.bias": t["norm.bias"],
           "classifier.weight": t["head.weight"], "classifier.bias": t["head.bias"]}
    for i in range(cfg.depth):
        p, h = f"blocks.{i}.", (f"vit.layers.{i}." if new_names else f"vit.encoder.layer.{i}.")
        qkv_w = t[p + "attn.qkv.weight"]
        qkv_b = t.get(p + "attn.qkv.bias", torch.zeros(3 * d))
        for j, name in enumerate(HF_QKV_NAMES[which]):
            out[h + name + ".weight"] = qkv_w[j * d:(j + 1) * d]
            out[h + name + ".bias"] = qkv_b[j * d:(j + 1) * d]
        for ours, theirs in HF_BLOCK_NAMES.items():
            out[h + theirs[which] + ".weight"] = t[p + ours + ".weight"]
            out[h + theirs[which] + ".bias"] = t[p + ours + ".bias"]
    return out


def hf_vit(cfg, weights, device):
    from transformers import ViTConfig, ViTForImageClassification

    if cfg.patch_norm_pre or cfg.patch_norm_post:
        raise ValueError("transformers' ViT has no patch norms")
    hf = ViTConfig(hidden_size=cfg.embed_dim, num_hidden_layers=cfg.depth,
                   num_attention_heads=cfg.num_heads, intermediate_size=cfg.mlp_dim,
                   image_size=cfg.image_size, patch_size=cfg.patch_size,
                   num_channels=cfg.in_chans, layer_norm_eps=cfg.ln_eps, qkv_bias=True,
                   hidden_act="gelu" if cfg.gelu == "erf" else "gelu_pytorch_tanh",
                   num_labels=cfg.num_classes, attn_implementation="sdpa")
    model = ViTForImageClassification(hf)
    new_names = "vit.layers.0.layernorm_before.weight" in model.state_dict()
    model.load_state_dict(hf_state_dict(cfg, weights, new_names), strict=True)
    model = model.to(device).eval().requires_grad_(False)
    return lambda x: model(pixel_values=x).logits


def timm_vit(cfg, weights, device):
    import timm
    import torch

    model = timm.create_model(cfg.name.replace("_seed", ""), pretrained=False,
                              num_classes=cfg.num_classes, img_size=cfg.image_size)
    model.load_state_dict({k: torch.from_numpy(np.array(v, np.float32))
                           for k, v in weights.items()}, strict=True)
    return model.to(device).eval().requires_grad_(False)


def wrap(fn, precision, device, compile_it=False):
    """images -> logits on the device, finished: fp32, or bf16 under autocast."""
    import torch

    if compile_it:
        fn = torch.compile(fn, dynamic=False)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]

    def run(x):
        with torch.inference_mode(), torch.autocast(device.type, dtype,
                                                    enabled=precision != "fp32"):
            y = fn(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return y
    return run


def runners(cfg, weights, device, precisions, compile_peers):
    """{label: callable} and {label: why it is missing}."""
    import polyvit
    from polyvit.bench import torch_peer

    found, missing = {}, {}

    def add(label, build):
        try:
            found[label] = build()
        except Exception as exc:  # a peer that cannot run is reported, not fatal
            missing[label] = f"{type(exc).__name__}: {exc}"

    for p in precisions:
        def triton_run(p=p):
            model = polyvit.load(weights, backend="triton", precision=p, config=cfg)
            return wrap(model.impl.run, "fp32", device)
        add(f"polyvit triton {p}", triton_run)
    if device.type == "cuda":
        for p in precisions:
            def cuda_run(p=p):
                model = polyvit.load(weights, backend="cuda", precision=p, config=cfg)
                return wrap(lambda y: model.impl.run(y, output="device"), "fp32", device)
            add(f"polyvit cuda {p}", cuda_run)
    peers = {"HF": ("transformers", lambda: hf_vit(cfg, weights, device)),
             "timm": ("timm", lambda: timm_vit(cfg, weights, device)),
             "torch": ("torch", lambda: torch_peer.vit(cfg, weights, device))}
    for name, (package, build) in peers.items():
        if importlib.util.find_spec(package) is None:
            missing[f"{name} eager"] = f"{package} is not installed"
            continue
        for p in precisions:
            add(f"{name} eager {p}", lambda b=build, p=p: wrap(b(), p, device))
            if compile_peers:
                add(f"{name} compile {p}", lambda b=build, p=p: wrap(b(), p, device, True))
    return found, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="vit_small_patch32_224")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256, 1024])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                        choices=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds per batch")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile peers")
    parser.add_argument("--smoke", action="store_true",
                        help="vit_test, batch 1 and 2, one round, fp32: checks the script runs "
                             "(under TRITON_INTERPRET=1 on a CPU); the times mean nothing")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    import torch

    import polyvit
    from polyvit.bench.rounds import quartiles, run_rounds
    from polyvit.config import get_config
    from polyvit.parity import random_images
    from polyvit.weights import random_weights

    ok, why = polyvit.available_backends()["triton"]
    if not ok:
        print(f"triton_model.py: the triton backend is not available here: {why}", file=sys.stderr)
        return 2
    if args.smoke:
        args.config, args.batches, args.rounds, args.precisions = "vit_test", [1, 2], 1, ["fp32"]
        args.no_compile = True
    elif not torch.cuda.is_available():
        print("triton_model.py: needs a CUDA GPU (or --smoke under TRITON_INTERPRET=1)",
              file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 peers compute in fp32, as we do
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda:0" if torch.cuda.is_available() and not args.smoke else "cpu")
    cfg = get_config(args.config)
    weights = random_weights(cfg, seed=0)
    found, missing = runners(cfg, weights, device, args.precisions, not args.no_compile)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (interpreter)"
    print(f"# {cfg.name} on {where}, torch {torch.__version__}, "
          f"triton {importlib.import_module('triton').__version__}, {time.strftime('%Y-%m-%d')}")
    for label, why in missing.items():
        print(f"  {label}: not run ({why})")
    rows, agreement = [], {}
    for batch in args.batches:
        x = torch.from_numpy(random_images(cfg, batch, seed=batch)).to(device)
        result = run_rounds({label: lambda run=run: run(x) for label, run in found.items()},
                            args.rounds, warmups=1 if args.smoke else 3)
        for label, error in result.errors.items():
            print(f"  batch {batch:5d} {label:32s} could not run: {error}")
        outputs = {k: v.float().cpu().numpy() for k, v in result.outputs.items()}
        reference = outputs.get(f"polyvit triton {args.precisions[0]}")
        for label, got in outputs.items():
            if reference is not None:
                agreement[f"{batch} {label}"] = float(np.max(np.abs(got - reference)))
        for label, seconds in result.seconds.items():
            lo, median, hi = quartiles(seconds)
            rows.append({"batch": batch, "runner": label, "median_ms": 1e3 * median,
                         "images_per_s": batch / median, "iqr_ms": [1e3 * lo, 1e3 * hi],
                         "max_abs_vs_triton_fp32": agreement.get(f"{batch} {label}")})
    print("\n| batch | runner | median ms | img/s | max\\|Δ\\| vs triton fp32 | peer / triton |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        precision = row["runner"].split()[-1]
        mine = next((r for r in rows if r["batch"] == row["batch"]
                     and r["runner"] == f"polyvit triton {precision}"), None)
        row["ratio_vs_triton"] = None if mine is None else row["median_ms"] / mine["median_ms"]
        shown = "—" if row is mine or mine is None else f"{row['ratio_vs_triton']:.2f}x"
        print(f"| {row['batch']} | {row['runner']} | {row['median_ms']:.3f} | "
              f"{row['images_per_s']:.0f} | {row['max_abs_vs_triton_fp32']:.2g} | {shown} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": where, "config": cfg.name, "rows": rows, "missing": missing,
                       "smoke": args.smoke}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
