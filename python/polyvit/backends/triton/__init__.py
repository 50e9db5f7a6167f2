"""Backend "triton": the ViT forward in Triton kernels, one kernel per file, named for its math.

    patch_embed.py  implicit-GEMM patch embedding (im2col is index arithmetic in the load)
    layernorm.py    LayerNorm, fp32 statistics, whole rows in registers
    linear.py       GEMM with fused epilogues: bias, bias + GELU (erf, tanh), bias + residual
    attention.py    fused attention: online softmax over key blocks (flash-attention style)
    bias_gelu.py    standalone bias + GELU (the forward fuses it into fc1's epilogue)
    softmax.py      standalone row softmax (the forward fuses it into attention)
    add.py          element-wise add with row broadcast (position embeddings)
    forward.py      the model: the kernels above in the order of polyvit.reference.forward
    backend.py      the backend contract: availability, precisions, options, single ops

The kernels are compiled for a CUDA GPU, or run on CPU tensors by Triton's interpreter when
TRITON_INTERPRET=1 is set before they are imported (how CI tests them; see
docs/backends/triton.md). Importing this package imports neither torch nor triton.
"""
