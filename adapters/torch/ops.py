""":class:`slimkit.ops.TensorOps` over torch tensors, for core's fake quantization and optimizer rules."""

from __future__ import annotations

from typing import Any

import torch

from slimkit.adapters.torch import distributed


class TorchOps:
    """PyTorch's tensor operations for core code; ``assign`` writes in place outside autograd."""

    def sqrt(self, x: Any) -> Any:
        return torch.sqrt(x)

    def abs(self, x: Any) -> Any:
        return torch.abs(x)

    def tanh(self, x: Any) -> Any:
        return torch.tanh(x)

    def round(self, x: Any) -> Any:
        return torch.round(x)  # half to even, like np.rint

    def clip(self, x: Any, lo: float, hi: float) -> Any:
        return torch.clamp(x, lo, hi)

    def fake_quantize_frozen(self, x: Any, scale: Any, zero_point: Any, qmin: float, qmax: float) -> Any:
        """Fake quantization in place on the fresh quotient ``x / scale`` when autograd records nothing:
        the generic path's values (round half to even, same order of operations) in a third of its time
        on large activations; None while gradients are recorded (QAT's straight-through estimator)."""
        if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad
                                           for t in (x, scale, zero_point)):
            return None
        v = x / scale
        return v.round_().add_(zero_point).clamp_(qmin, qmax).sub_(zero_point).mul_(scale)

    def eager_flag(self, x: Any) -> bool | None:
        """A one-element tensor's truth, or None while tracing or exporting (fake or traced tensors,
        TorchScript, torch.compile), where reading it would bake one branch into the graph."""
        if type(x) is not torch.Tensor or x.numel() != 1 or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return None
        return bool(x)

    def minimum(self, a: Any, b: Any) -> Any:
        return torch.clamp(a, max=b) if not isinstance(b, torch.Tensor) else torch.minimum(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return torch.clamp(a, min=b) if not isinstance(b, torch.Tensor) else torch.maximum(a, b)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return torch.where(cond, a, b)

    def isnan(self, x: Any) -> Any:
        return torch.isnan(x)

    def isfinite(self, x: Any) -> Any:
        return torch.isfinite(x)

    def logical_and(self, a: Any, b: Any) -> Any:
        return torch.logical_and(a, b)

    def amin(self, x: Any, axes: tuple[int, ...] | None) -> Any:
        return x.amin() if axes is None else x.amin(dim=axes)

    def amax(self, x: Any, axes: tuple[int, ...] | None) -> Any:
        return x.amax() if axes is None else x.amax(dim=axes)

    def mean(self, x: Any, axes: tuple[int, ...] | None) -> Any:
        return x.mean() if axes is None else x.mean(dim=axes)

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        return x.reshape(shape)

    def size(self, x: Any, axis: int | None = None) -> Any:
        return torch.tensor(float(x.numel() if axis is None else x.shape[axis]), dtype=torch.float32,
                            device=x.device)

    def cast(self, x: Any, dtype: str) -> Any:
        return x.to({"float32": torch.float32, "float64": torch.float64}[dtype])

    def full_like(self, x: Any, value: float) -> Any:
        return torch.full_like(x, value)

    def exp(self, x: Any) -> Any:
        return torch.exp(x)

    def log(self, x: Any) -> Any:
        return torch.log(x)

    def sum(self, x: Any, axes: tuple[int, ...] | None) -> Any:
        return x.sum() if axes is None else x.sum(dim=axes)

    def mix_channels(self, x: Any, w: Any) -> Any:
        return torch.tensordot(w, x, dims=([1], [1])).movedim(0, 1)

    def stop_gradient(self, x: Any) -> Any:
        return x.detach()

    def read(self, variable: Any) -> Any:
        return variable

    def across_replicas(self, x: Any, op: str) -> Any:
        group = distributed.active_group()
        return x if group is None else distributed.reduce_across(x, op, group)

    def assign(self, target: Any, value: Any) -> None:
        with torch.no_grad():
            target.copy_(value)


TORCH_OPS = TorchOps()
