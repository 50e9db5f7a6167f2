"""GELU in its two forms as Triton device functions, shared by the linear epilogue and the
standalone bias_gelu kernel."""

import triton
import triton.language as tl

# globals a kernel reads must be constexpr
RSQRT2 = tl.constexpr(0.7071067811865476)          # 1 / sqrt(2)
SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)  # sqrt(2 / pi)


@triton.jit
def gelu_erf(x):
    """x * Phi(x), exactly: 0.5 x (1 + erf(x / sqrt 2))."""
    return 0.5 * x * (1.0 + tl.math.erf(x * RSQRT2))


@triton.jit
def gelu_tanh(x):
    """0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), written as x * sigmoid(2u) =
    x / (1 + exp(-2u)): no tanh intrinsic needed, no cancellation for large negative u, and
    exp overflowing to inf gives the right limit 0."""
    u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
    return x / (1.0 + tl.exp(-2.0 * u))
