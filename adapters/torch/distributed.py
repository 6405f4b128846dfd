"""A ``torch.distributed`` job as slimkit sees it: the collective over a process group, each rank's share
of a global batch, and batch norms whose statistics cover the global batch.

slimkit does not start processes or initialise the process group: the user's launcher does (torchrun,
``torch.multiprocessing``) and ``torch.distributed.init_process_group`` with any backend. slimkit's own
collectives and DDP's gradient all-reduce run in a gloo group of their own (CPU tensors), created once per
timeout, so a rank that fails stops the others within ``distributed.timeout_s`` instead of gloo's default
30 minutes. A rank that fails records why in the job's store before its error goes up, and the others
name it in their :class:`~slimkit.adapter.collective.DistributedError`.
"""

from __future__ import annotations

import contextlib
import datetime
import types
import warnings
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from slimkit.adapter.collective import LOCAL, Collective, DistributedError
from slimkit.errors import SlimkitWarning
from slimkit.recipe import Distributed

_OPS = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
_GROUPS: dict[float, Any] = {}
_FAILED = "slimkit/failed/"


def running() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def job(settings: Distributed) -> Collective:
    """The job this process belongs to: a :class:`TorchCollective`, or LOCAL outside a process group."""
    return TorchCollective(settings.timeout_s) if running() else LOCAL


def _group(timeout_s: float) -> Any:
    """slimkit's gloo group with this timeout (made once: creating a group is itself a collective)."""
    if timeout_s not in _GROUPS:
        _GROUPS[timeout_s] = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return _GROUPS[timeout_s]


class TorchCollective(Collective):
    """The ranks of an initialised ``torch.distributed`` process group.

    Attributes:
        group: slimkit's gloo group over every rank (DDP's gradients go through it too).
        timeout_s: how long a collective waits for the other ranks.
    """

    def __init__(self, timeout_s: float) -> None:
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.timeout_s = float(timeout_s)
        self.group = _group(self.timeout_s)

    def all_reduce(self, value: np.ndarray, op: str, what: str) -> np.ndarray:
        tensor = torch.from_numpy(np.array(value, copy=True, ndmin=1))
        with self.failures(what):
            dist.all_reduce(tensor, op=_OPS[op], group=self.group)
        return tensor.numpy().reshape(np.shape(value))

    def broadcast(self, value: np.ndarray, what: str) -> np.ndarray:
        tensor = torch.from_numpy(np.array(value, copy=True, ndmin=1))
        with self.failures(what):
            dist.broadcast(tensor, src=0, group=self.group)
        return tensor.numpy().reshape(np.shape(value))

    def broadcast_module(self, module: nn.Module, what: str) -> None:
        """Rank 0's parameters and buffers in ``module`` on every rank (the working copy starts alike
        everywhere, so decisions made from weights before training are the same on every rank)."""
        with self.failures(what), torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0, group=self.group)

    @contextlib.contextmanager
    def failures(self, what: str) -> Iterator[None]:
        """Context turning a failed collective into DistributedError naming the rank that failed; any other
        error (a user's failing loader) goes up as it is."""
        try:
            yield
        except Exception as exc:
            if not _engine_error(exc):
                raise
            failed = self.failed_ranks()
            if failed:
                who = "; ".join(f"rank {r} failed with {msg}" for r, msg in sorted(failed.items()))
            else:
                who = (f"another rank stopped or did not answer within distributed.timeout_s = {self.timeout_s:g} s "
                       "(rank 0 holds the job's store: if it is gone, rank 0 stopped)")
            raise DistributedError(f"{what}: {who}; rank {self.rank} of {self.size} stops here "
                                   f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc

    def announce(self, exc: BaseException) -> None:
        """Records in the job's store that this rank failed, and why, for the others' errors (a rank that
        stopped because another failed records nothing). Ranks waiting on this one fail as soon as its
        process ends (gloo sees the connection close), else at the timeout."""
        if isinstance(exc, DistributedError):
            return
        try:
            store = dist.distributed_c10d._get_default_store()
            store.set(f"{_FAILED}{self.rank}", f"{type(exc).__name__}: {exc}"[:500])
        except Exception:  # no store reachable: the others still time out and say a rank stopped  # noqa: BLE001
            pass

    def failed_ranks(self) -> dict[int, str]:
        """rank -> its recorded error, for ranks that announced a failure (empty if none or unreadable)."""
        found: dict[int, str] = {}
        try:
            store = dist.distributed_c10d._get_default_store()
            for rank in range(self.size):
                key = f"{_FAILED}{rank}"
                if rank != self.rank and store.check([key]):
                    found[rank] = store.get(key).decode("utf-8", "replace")
        except Exception:  # rank 0 hosts the store; if it stopped, it is gone  # noqa: BLE001
            pass
        return found


#: how gloo's transport errors start when they reach Python as plain RuntimeErrors (from autograd's
#: thread, through DDP's reducer) rather than as ``torch.distributed.DistError``
_GLOO_SIGNS = ("gloo/transport", "Connection closed by peer", "Connection reset by peer", "Timed out waiting")


def _engine_error(exc: BaseException) -> bool:
    """True for an error of the collectives' engine: a peer gone, a timeout."""
    if isinstance(exc, dist.DistError):
        return True
    return isinstance(exc, RuntimeError) and any(sign in str(exc) for sign in _GLOO_SIGNS)


class DDPRunner:
    """The working copy wrapped in ``DistributedDataParallel`` over slimkit's group, wrapped anew when
    training changed its parametrizations (pruning installs a mask on a layer mid-training): DDP hooks the
    gradients of the tensors it found when it was built, and a tensor computed through a new
    parametrization would never report its gradient to it. Buffers stay each rank's own (no
    ``broadcast_buffers``): slimkit reduces them itself (batch norms, fake-quant ranges).

    DDP must know whether some parameters get no gradient (a pooler beside the logits, a head the loss does
    not read): told wrongly, it would step with gradients it never averaged. Each build finds out with one
    forward and backward in eval mode on the step's inputs (no statistics move), agreed over the ranks;
    ``find_unused_parameters`` (an extra graph traversal every step) is set only for such models."""

    def __init__(self, model: nn.Module, collective: TorchCollective) -> None:
        self._model, self._coll = model, collective
        self._signature: tuple[Any, ...] | None = None
        self._ddp: nn.Module | None = None

    def current(self, inputs: Any) -> nn.Module:
        """The DDP module for the model as it is now (every rank changes it at the same step), about to
        run on ``inputs`` (tensors)."""
        from torch.nn.parallel import DistributedDataParallel
        from torch.nn.utils import parametrize

        signature = (tuple(id(p) for p in self._model.parameters()),
                     tuple((name, attr, len(plist)) for name, module in self._model.named_modules()
                           if parametrize.is_parametrized(module) for attr, plist in module.parametrizations.items()))
        if signature != self._signature:
            self._ddp = None  # the old wrapper's gradient hooks go with it
            with self._coll.failures("fine-tuning (wrapping the model in DistributedDataParallel)"):
                unused = self._unused(inputs)
                self._ddp = DistributedDataParallel(self._model, process_group=self._coll.group,
                                                    broadcast_buffers=False, find_unused_parameters=unused)
            self._signature = signature
        return self._ddp

    def _unused(self, inputs: Any) -> bool:
        """True when some trained parameter gets no gradient from the model's output, on any rank."""
        from slimkit.adapters.torch.inputs import call, first_tensor
        from slimkit.adapters.torch.isolation import inference

        params = [p for p in self._model.parameters() if p.requires_grad]
        with inference(self._model, suspend_hooks=False), torch.enable_grad():
            out = first_tensor(call(self._model, inputs), type(self._model).__name__)
            grads = torch.autograd.grad(out.float().sum(), params, allow_unused=True)
        mine = any(g is None for g in grads)
        return bool(self._coll.all_reduce(np.array([float(mine)]), "max", "finding unused parameters")[0])


def share(batch: np.ndarray, collective: TorchCollective) -> np.ndarray:
    """This rank's contiguous part of a global batch's sample indices (the parts differ by at most one)."""
    return np.array_split(batch, collective.size)[collective.rank]


class SyncedBatchNorm:
    """While active, training-mode batch norms of ``model`` normalise with the mean and variance of the
    global batch (every rank's share, through autograd-aware all-reduces) and update their running
    statistics with them: what one process computes on the whole batch. ``torch.nn.SyncBatchNorm``
    would do this on GPUs only (it refuses CPU tensors). Running variances follow slimkit's rule (the
    biased variance, as Keras), so :class:`.training.BiasedBatchNormStatistics` leaves these alone."""

    def __init__(self, model: nn.Module, collective: TorchCollective) -> None:
        self.modules = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._group = collective.group

    def __enter__(self) -> "SyncedBatchNorm":
        group = self._group
        for module in self.modules:
            module.forward = types.MethodType(lambda m, x: _synced_forward(m, x, group), module)
        return self

    def __exit__(self, *exc: Any) -> None:
        for module in self.modules:
            module.__dict__.pop("forward", None)


def _synced_forward(module: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, group: Any) -> torch.Tensor:
    if not module.training:
        return type(module).forward(module, x)
    from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce

    dims = [d for d in range(x.dim()) if d != 1]
    shape = [1, -1] + [1] * (x.dim() - 2)
    count = x.new_tensor([x.numel() // max(1, x.shape[1])], dtype=x.dtype)
    total = differentiable_all_reduce(torch.cat([x.sum(dims), count]), group=group)
    n = total[-1]
    mean = total[:-1] / n
    centred = x - mean.reshape(shape)
    var = differentiable_all_reduce((centred * centred).sum(dims), group=group) / n  # two passes: exact
    if module.track_running_stats and module.running_mean is not None:
        with torch.no_grad():
            module.num_batches_tracked.add_(1)
            m = module.momentum if module.momentum is not None else 1.0 / float(module.num_batches_tracked)
            module.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            module.running_var.mul_(1 - m).add_(var.detach(), alpha=m)
    y = centred / torch.sqrt(var.reshape(shape) + module.eps)
    if module.affine:
        y = y * module.weight.reshape(shape) + module.bias.reshape(shape)
    return y


def loss_weight(local: int, global_count: int, collective: TorchCollective) -> float:
    """Factor on a rank's mean loss so that DDP's average of the ranks' gradients is the gradient of the
    mean over the global batch, however unevenly it was split."""
    return local * collective.size / max(1, global_count)


def global_count(local: int, collective: TorchCollective) -> int:
    """Samples in this step's global batch (each rank knows only its own share's)."""
    return int(collective.all_reduce(np.array([local], np.int64), "sum", "the global batch's size")[0])


def reduce_across(x: torch.Tensor, op: str, group: Any) -> torch.Tensor:
    """``x`` (no gradient) reduced over the ranks: ``min``, ``max`` or ``mean``."""
    out = x.detach().clone()
    if op == "mean":
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out / dist.get_world_size(group)
    dist.all_reduce(out, op=_OPS[op], group=group)
    return out


_TRAINING: list[Any] = []


class training_step_group:
    """Context in which :meth:`.ops.TorchOps.across_replicas` reduces over ``group`` (the built-in loop
    enters it for the whole fine-tuning; outside, batch statistics stay each rank's own)."""

    def __init__(self, group: Any) -> None:
        self._group = group

    def __enter__(self) -> None:
        _TRAINING.append(self._group)

    def __exit__(self, *exc: Any) -> None:
        _TRAINING.pop()


def active_group() -> Any:
    """The group a training step's statistics are reduced over, or None."""
    return _TRAINING[-1] if _TRAINING else None


def _average(tensors: list[torch.Tensor], collective: TorchCollective, what: str) -> None:
    """Each tensor replaced by its mean over the ranks, in place."""
    with collective.failures(what), torch.no_grad():
        for tensor in tensors:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=collective.group)
            tensor.div_(collective.size)


def average_gradients(params: list[torch.nn.Parameter], collective: TorchCollective) -> None:
    """Averages the gradients of parameters outside the DDP module (distillation projections)."""
    _average([p.grad for p in params if p.grad is not None], collective,
             "averaging the distillation projections' gradients")


def average_batchnorm_statistics(model: nn.Module, collective: TorchCollective) -> None:
    """Running means and variances averaged over the ranks: each rank's batch norms followed only its own
    share of every batch (an exponential average is linear, so this is the average of the ranks' every
    update, as Keras keeps a mirrored batch norm's moving statistics)."""
    _average([stat for module in model.modules()
              if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None
              for stat in (module.running_mean, module.running_var)], collective, "averaging batch-norm statistics")


def check_agreement(model: nn.Module, collective: TorchCollective, what: str) -> None:
    """Makes sure every rank holds the same model after ``what``; if a rank drifted (state slimkit does not
    know how to reduce, a user's buffer), rank 0's is copied to every rank with a warning."""
    state = [t.detach().cpu().numpy() for t in [*model.parameters(), *model.buffers()]]
    if collective.agree(state, what):
        return
    warnings.warn(f"{what}: the ranks' models differ after training (in one of {len(state)} tensors); rank 0's "
                  "weights and buffers are copied to every rank", SlimkitWarning, stacklevel=3)
    collective.broadcast_module(model, what)
