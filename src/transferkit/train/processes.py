"""Where a fit runs: the shared Accelerate object (CPU, one GPU, mixed precision, ``accelerate launch``), the memory
layout of convolutions, and what several processes must do together (gather a step's outputs for the loss terms,
broadcast and average the loss modules by hand, sum an epoch's running numbers, agree on a clock)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from transferkit.errors import ConfigError
from transferkit.train.terms import StepOutputs

_ACCELERATORS: dict[tuple[bool, str], Any] = {}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX, or AVX-512 BF16): there bf16 autocast is faster; on other
    CPUs it is emulated and slower than fp32."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # a torch without these probes: assume not
        return False


# bf16 pays on a CPU for convolutions and for matmuls at least this large (weights of one Linear layer): below it a
# step is per-operator overhead, which bf16 does not shorten (MiniLM's 384-d features into a 256-wide MLP: 1.00x)
BF16_MIN_LINEAR_WEIGHTS = 2**20


def bf16_pays_off(model: nn.Module) -> bool:
    """Whether a model has the work that bf16 matmuls speed up on a CPU: a convolution, or a Linear layer of at least
    :data:`BF16_MIN_LINEAR_WEIGHTS` weights (an MLP on 5,000-d features: 0.7-0.8x the time)."""
    for m in model.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            return True
        if isinstance(m, nn.Linear) and m.in_features * m.out_features >= BF16_MIN_LINEAR_WEIGHTS:
            return True
    return False


def resolve_precision(mixed_precision: str, cuda: bool, model: nn.Module | None = None) -> str:
    """``auto``: bf16 (or fp16 where the GPU lacks bf16) on a GPU. On a CPU, bf16 where the CPU multiplies bf16
    natively (emulated bf16 is slower) and the model has the work it speeds up (:func:`bf16_pays_off`), fp32
    otherwise. Autocast keeps weights, optimiser state and losses in fp32. Measured on four families
    (docs/scaling.md, 3 seeds each): accuracy within seed noise of fp32, 0.6-0.7x the time for LeNet, 0.7-0.8x
    for an MLP on 5,000-d features, no gain on small features or the log-mel CNN; on a 2-d toy task CDAN failed
    more often in bf16 (where bf16 gains nothing, so ``auto`` keeps fp32 there). Under ``accelerate launch`` its
    ``--mixed_precision`` decides on a GPU, and CPU processes train in fp32."""
    if mixed_precision != "auto":
        return mixed_precision
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")  # `accelerate launch --mixed_precision X` / its config
    if launched in ("no", "fp16", "bf16"):
        return launched if cuda else "no"
    if cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if model is not None and bf16_pays_off(model) and cpu_has_native_bf16() else "no"


def process_accelerator(device: str = "auto", mixed_precision: str = "auto", grad_accum_steps: int = 1) -> Any:
    """For what every precision answers alike (is this the main process? wait for the others): the accelerator this
    process already holds for ``device``, else a new one; never a switch of precision (which resets Accelerate)."""
    cuda = torch.cuda.is_available() and device != "cpu"
    held = next((acc for (cpu, _), acc in _ACCELERATORS.items() if cpu == (not cuda)), None)
    return held if held is not None else get_accelerator(device, mixed_precision, grad_accum_steps)


def get_accelerator(device: str = "auto", mixed_precision: str = "auto", grad_accum_steps: int = 1,
                    model: nn.Module | None = None) -> Any:
    """One Accelerator per (device, precision) per process: Accelerate's state is a process-wide singleton.
    ``model`` (what will train) lets ``auto`` precision decide on a CPU (:func:`resolve_precision`)."""
    from accelerate import Accelerator

    cuda = torch.cuda.is_available() and device != "cpu"
    mixed_precision = resolve_precision(mixed_precision, cuda, model)
    key = (not cuda, mixed_precision)
    if key not in _ACCELERATORS:
        if _ACCELERATORS:
            # Accelerate keeps one process-wide state and refuses a second precision in the same process (a
            # notebook, a sweep, a benchmark). Single-process runs hold nothing in that state worth keeping.
            from accelerate.state import AcceleratorState

            if AcceleratorState().num_processes > 1:
                raise ConfigError(
                    f"this distributed process already trains with {next(iter(_ACCELERATORS))}; device and "
                    "mixed precision cannot change within one `accelerate launch`"
                )
            AcceleratorState._reset_state(reset_partial_state=True)
            _ACCELERATORS.clear()
        _ACCELERATORS[key] = Accelerator(cpu=not cuda, mixed_precision=mixed_precision)
    acc = _ACCELERATORS[key]
    acc.gradient_accumulation_steps = grad_accum_steps
    return acc


def channels_last(setting: str, model: nn.Module, device: torch.device) -> bool:
    """Whether to train in the channels-last layout: ``auto`` picks it for a convolutional network on a CPU, where
    oneDNN's convolutions run faster on it (``benchmarks/cpu_step.py``: a LeNet step of 64 digits 15.6 -> 9.9 ms, a
    DANN step 37.7 -> 28.3 ms on 2 cores). The arithmetic is the same; only the order of summation inside a
    convolution may differ."""
    if setting != "auto":
        return setting == "channels_last"
    return device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules())


def gather_outputs(out: StepOutputs) -> StepOutputs:
    """The step's outputs over every process, concatenated in rank order (the batch one process would see with the
    same global batch size). Gathered with autograd: each process's share gets the gradient of the global loss."""
    from torch.distributed import _functional_collectives as fc

    world = torch.distributed.group.WORLD

    def cat(t: torch.Tensor | None, grad: bool = True) -> torch.Tensor | None:
        if t is None:
            return None
        gather = fc.all_gather_single_autograd if grad else fc.all_gather_single
        return fc.wait_tensor(gather(t.contiguous(), 0, world))

    labels = cat(out.source_labels, grad=False)
    assert labels is not None
    # target_inputs / model stay local: only per-item terms (self-training's strong views) use them; so do the task
    # heads' outputs (their losses are means over items)
    return StepOutputs(cat(out.source_features), cat(out.source_logits), labels, cat(out.target_features),
                       cat(out.target_logits), out.progress, out.target_inputs, out.model, out.labelled_features,
                       out.labelled_logits, out.labelled_labels, out.source_heads, out.source_targets,
                       cat(out.source_domains, grad=False), cat(out.source_weights, grad=False))


def clock_says(acc: Any, due: bool) -> bool:
    """A time-based decision every process takes together (the main process's clock decides): a checkpoint
    involves collective operations, which would hang if only some processes entered them."""
    if acc.num_processes == 1:
        return due
    flag = torch.tensor([float(due)], device=acc.device)
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def broadcast_module(module: nn.Module, num_processes: int) -> None:
    """Start the loss modules from rank 0's initial weights on every process (DDP does this for the model)."""
    if num_processes > 1:
        for t in [*module.parameters(), *module.buffers()]:
            torch.distributed.broadcast(t.data, src=0)


def average_gradients(module: nn.Module, num_processes: int) -> None:
    """DDP averages the model's gradients; the loss modules are not wrapped, so theirs are averaged here."""
    if num_processes > 1:
        for p in module.parameters():
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad /= num_processes


def sum_over_processes(acc: Any, sums: dict[str, float], correct: int, seen: int) -> tuple[dict[str, float], int, int]:
    """An epoch's running sums over every process, so that its record describes the whole epoch."""
    if acc.num_processes == 1:
        return sums, correct, seen
    keys = sorted(sums)
    t = torch.tensor([*(sums[k] for k in keys), float(correct), float(seen)], dtype=torch.float64, device=acc.device)
    t = acc.reduce(t, reduction="sum")
    values = t.tolist()
    return dict(zip(keys, values[: len(keys)], strict=True)), int(values[-2]), int(values[-1])


def compiled(model: nn.Module, mode: str) -> Callable[..., Any]:
    """``torch.compile``'s view of ``model`` for the training steps: the same parameters and buffers, run as
    generated kernels (``default``) and on a GPU also replayed as CUDA graphs (``reduce-overhead``), which is what
    a small model's step needs there (each of its few dozen kernels is shorter than its launch). Shapes are static:
    a new batch size (an epoch's last batch) compiles once more."""
    return torch.compile(model, mode=None if mode == "default" else mode, dynamic=False)
