"""Model FLOPs per token and GPU peaks, for throughput (TFLOP/s) and MFU.

FLOPs per token follow the usual dense-transformer count (see the bench notes):
- full fine-tune: 6·N + 12·layers·hidden·seq (forward, activation and weight gradients);
- LoRA on a frozen base: 4·N + 8·layers·hidden·seq (no weight gradients for the base).
N counts every parameter, embeddings included (they are tied in Llama 3.2 1B).
"""

from __future__ import annotations

# Dense (not sparse) bf16 tensor-core peaks, in FLOP/s, from the vendors' data sheets. The more
# specific names come first: "H100 PCIe" must not match the SXM figure.
_PEAKS: list[tuple[str, float]] = [
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100 PCIE", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
]


def gpu_peak_flops(device_name: str) -> float | None:
    """The card's dense bf16 peak in FLOP/s, or None when the card is not known."""
    upper = device_name.upper()
    for key, peak in _PEAKS:
        if key in upper:
            return peak
    return None


def flops_per_token(params: int, layers: int, hidden: int, seq: int, *, lora: bool) -> float:
    """Training FLOPs per token (module doc)."""
    if lora:
        return 4.0 * params + 8.0 * layers * hidden * seq
    return 6.0 * params + 12.0 * layers * hidden * seq


def mfu(tokens_per_second: float, per_token: float, peak: float | None, gpus: int) -> float | None:
    """Model FLOPs utilisation in [0, 1], or None when the peak is unknown."""
    if peak is None or gpus <= 0:
        return None
    return tokens_per_second * per_token / (peak * gpus)
