"""What every check shares: the failure type, the check context, tensor
comparisons, contract probes and building the subject of a check."""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Iterator, Mapping

__all__ = [
    "ATOL", "ConformanceError", "builder", "check", "close", "gradient_problems", "jittered_copy",
    "load_bytes", "max_diff", "perturbed_copy", "rebuilt_from_state", "resolve_registry", "state_bytes", "take",
    "unregistered",
]

ATOL = 1e-5


class ConformanceError(AssertionError):
    """A component broke the contract: ``subject`` failed ``check`` because ``reason``."""

    def __init__(self, subject: str, check: str, reason: str):
        self.subject, self.check, self.reason = subject, check, reason
        super().__init__(f"{subject} fails check '{check}': {reason}")


@contextlib.contextmanager
def check(subject: str, name: str) -> Iterator[None]:
    """Turn any failure inside the block into a ConformanceError naming ``name``."""
    try:
        yield
    except ConformanceError:
        raise
    except AssertionError as exc:
        raise ConformanceError(subject, name, str(exc)) from exc
    except Exception as exc:
        raise ConformanceError(subject, name, f"raised {type(exc).__name__}: {exc}") from exc


# ------------------------------------------------------------------ helpers


def resolve_registry(registry):
    from mmzoo.plugins import default_registry

    return registry if registry is not None else default_registry()


def take(x: Any, index: list[int]) -> Any:
    """Samples ``index`` of a batch (tensor, mapping of tensors, or list)."""
    import torch

    if isinstance(x, torch.Tensor):
        return x[index]
    if isinstance(x, Mapping):
        return {k: take(v, index) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [x[i] for i in index]
    raise AssertionError(f"cannot slice an input of type {type(x).__name__} into samples")


def close(a, b, atol: float = ATOL) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.allclose(a, b, atol=atol, rtol=atol, equal_nan=False))


def max_diff(a, b) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def unregistered(module) -> list[str]:
    """Parameters, trainable tensors or modules that ``state_dict`` and
    ``parameters()`` miss: held in plain lists/dicts/tuples, or set with
    ``object.__setattr__`` (``nn.Module`` registers direct attributes itself)."""
    import torch
    from torch import nn

    registered = {id(t) for t in module.parameters()} | {id(t) for t in module.buffers()} | \
        {id(m) for m in module.modules()}

    def hidden(item: Any) -> bool:  # a trainable thing the root module does not know about
        trainable = isinstance(item, (nn.Parameter, nn.Module)) or \
            (isinstance(item, torch.Tensor) and item.requires_grad)
        return trainable and id(item) not in registered

    problems = []
    for prefix, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if attr in ("_parameters", "_buffers", "_modules"):
                continue
            where = f"{prefix + '.' if prefix else ''}{attr}"
            if hidden(value):
                problems.append(f"{where} is a {type(value).__name__} the module does not register")
            elif isinstance(value, (list, tuple, dict)):
                items = value.values() if isinstance(value, dict) else value
                if any(hidden(item) for item in items):
                    problems.append(f"{where} holds modules or parameters in a plain {type(value).__name__}; "
                                    "use nn.ModuleList / nn.ModuleDict / nn.ParameterList so they are "
                                    "registered (saved, moved to the device, trained)")
    return problems


def gradient_problems(module, allow_zero: bool = False) -> list[str]:
    """Parameters the gradient never reached (None) or, unless ``allow_zero``,
    reached with exactly zero everywhere."""
    import torch

    never, zero = [], []
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.grad is None:
            never.append(name)
        elif not allow_zero and not bool(torch.any(parameter.grad != 0)):
            zero.append(name)
    problems = []
    if never:
        problems.append(f"parameters never reached by the gradient (built but unused?): {never[:10]}")
    if zero:
        problems.append(f"parameters whose gradient is exactly zero: {zero[:10]}")
    return problems


def state_bytes(module) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()})


def load_bytes(module, data: bytes) -> None:
    from safetensors.torch import load

    from mmzoo.weights import load_state

    load_state(module, load(data), strict=True, source="the saved state_dict")


def rebuilt_from_state(make: Callable[[int], Any], module):
    """A fresh component (``make(1)``, in eval mode) loaded from ``module``'s
    saved ``state_dict`` bytes."""
    fresh = make(1).eval()
    load_bytes(fresh, state_bytes(module))
    return fresh


def perturbed_copy(module, scale: float = 1.0):
    """A deep copy whose floating parameters and buffers are all changed."""
    import torch

    other = copy.deepcopy(module)
    with torch.no_grad():
        for tensor in [*other.parameters(), *other.buffers()]:
            if tensor.is_floating_point():
                tensor.add_(scale * (torch.randn_like(tensor) + 1.0))
    return other


def jittered_copy(module):
    """A deep copy with small noise on every parameter (buffers untouched), for
    the gradient check: zero-initialised weights (a residual branch's last
    BatchNorm, say) block the gradient only at initialisation, while a
    parameter that is structurally cut off stays at zero gradient."""
    import torch

    other = copy.deepcopy(module)
    with torch.no_grad():
        for parameter in other.parameters():
            if parameter.is_floating_point():
                parameter.add_(0.02 * torch.randn_like(parameter))
    return other


def builder(kind: str, spec: Any, kwargs: Mapping[str, Any] | None, registry, skip: set[str],
             extra: Mapping[str, Any]) -> tuple[str, Callable[[int], Any], Any]:
    """(label, make(seed) -> component, resolved-or-None) for a name, a factory or an instance."""
    import torch

    kwargs = dict(kwargs or {})
    if isinstance(spec, str):
        from mmzoo.builder import build_part
        from mmzoo.names import NamePart, parse_part

        part = parse_part(spec)
        resolved = resolve_registry(registry).resolve(kind, part.name)
        part = NamePart(part.name, {**part.kwargs, **kwargs})

        def make(seed: int):
            with torch.random.fork_rng(devices=[]):  # the caller's random state is left alone
                torch.manual_seed(seed)
                return build_part(resolved, part, skip, extra)[0]

        return f"{kind} {str(part)!r}", make, resolved
    if isinstance(spec, torch.nn.Module):
        def copy_of(seed: int):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return spec if seed == 0 else perturbed_copy(spec)

        return f"{kind} {type(spec).__name__}", copy_of, None
    if callable(spec):
        def call(seed: int):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return spec(**kwargs, **extra)

        return f"{kind} {getattr(spec, '__qualname__', repr(spec))}", call, None
    raise TypeError(f"check_{kind} takes a registered name, a class/factory or an instance, "
                    f"not {type(spec).__name__}")
