"""A plain PyTorch SGLD loop on the reference head (run by bench.py with a torch interpreter).

Same model, data, batch and potential as the JAX side: MLP 320-128-10 (relu), batch 64,

    log p(theta | B) = N/|B| * [ sum_B log Cat(y | softmax(f(x)))
                               + beta * sum_B log sum_m w_m Dir(softmax(f(x)/T); 1 + lambda p_m) ]
                     - |theta|^2 / 2                                  (Normal(0, 1) base prior)

with the teacher-prior constants (lambda p, log B(1 + lambda p), log w) precomputed by
mtbkd_jax and read from .npy files, and the update theta <- theta + eta grad + sqrt(2 eta) xi.
Eager PyTorch on the CPU, torch.autograd.grad, a fresh randperm per epoch: the loop a user would
write by hand. Prints one JSON line.

    python torch_sgld.py --data DIR [--steps 1000] [--reps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def load(directory: Path):
    arrays = {p.stem: np.load(p) for p in directory.glob("*.npy")}
    meta = json.loads((directory / "meta.json").read_text())
    return arrays, meta


def _args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1000, help="steps per timed repeat")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def build_steps(arrays: dict, meta: dict):
    """``(params, sgld_step, grad_step)`` of the reference head's SGLD in eager PyTorch."""
    x = torch.from_numpy(arrays["x"])
    y = torch.from_numpy(arrays["y"].astype(np.int64))
    scaled = torch.from_numpy(arrays["scaled_probs"])  # (N, M, C)
    log_norm = torch.from_numpy(arrays["log_normalizer"])  # (N, M)
    log_w = torch.from_numpy(arrays["log_weights"])  # (N, M)
    params = [
        torch.from_numpy(arrays[name].copy()).requires_grad_(True)
        for name in ("w1", "b1", "w2", "b2")
    ]
    n, batch = x.shape[0], int(meta["batch_size"])
    scale = n / batch
    beta, temperature = float(meta["prior_power"]), float(meta["temperature"])
    eta = float(meta["step_size"])
    noise_scale = math.sqrt(2.0 * eta)
    steps_per_epoch = n // batch

    def log_density(index):
        w1, b1, w2, b2 = params
        xb = x[index]
        logits = torch.relu(xb @ w1 + b1) @ w2 + b2
        log_lik = -F.cross_entropy(logits, y[index], reduction="sum")
        log_q = torch.log_softmax(logits / temperature, dim=-1)
        components = torch.einsum("bmc,bc->bm", scaled[index], log_q) - log_norm[index]
        teacher = torch.logsumexp(log_w[index] + components, dim=-1).sum()
        base = -0.5 * sum((p * p).sum() for p in params)
        return scale * (log_lik + beta * teacher) + base

    state = {"step": 0, "perm": torch.randperm(n)}

    def next_index():
        i = state["step"] % steps_per_epoch
        if i == 0:
            state["perm"] = torch.randperm(n)
        state["step"] += 1
        return state["perm"][i * batch : (i + 1) * batch]

    def step(noise: bool):
        grads = torch.autograd.grad(log_density(next_index()), params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.add_(g, alpha=eta)
                if noise:
                    p.add_(torch.randn_like(p), alpha=noise_scale)

    return params, lambda: step(True), lambda: step(False)


def main() -> None:
    args = _args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    params, sgld_step, grad_step = build_steps(*load(args.data))

    def rates(step_fn):
        for _ in range(min(args.steps, 200)):  # warm-up
            step_fn()
        out = []
        for _ in range(args.reps):
            start = time.perf_counter()
            for _ in range(args.steps):
                step_fn()
            out.append(args.steps / (time.perf_counter() - start))
        return out

    sgld = rates(sgld_step)
    grad = rates(grad_step)
    finite = all(bool(torch.isfinite(p).all()) for p in params)
    print(
        json.dumps(
            {
                "torch_version": torch.__version__,
                "threads": torch.get_num_threads(),
                "steps_per_rep": args.steps,
                "sgld_steps_per_s": sgld,
                "grad_steps_per_s": grad,
                "finite": finite,
            }
        )
    )


if __name__ == "__main__":
    main()
