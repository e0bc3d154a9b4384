"""ONNX export of a saved model, checked against onnxruntime.

The exported graph takes one tensor per input (text as ``<slot>_input_ids``
and ``<slot>_attention_mask``) plus a ``present_<slot>`` bool mask per input,
with dynamic batch and sequence axes; it returns the logits (or the fused
embedding for ``num_classes=0``). The input names are recorded in the ONNX
metadata (``mmzoo_inputs``) and in ``<file>.json`` next to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from mmzoo.components import TextEncoder
from mmzoo.errors import InputError, MMZooError

__all__ = ["export_onnx", "export_command"]


def _example_inputs(model, batch: int, length: int) -> dict[str, Any]:
    """A batch of every input at the sizes the encoders expect."""
    generator = torch.Generator().manual_seed(0)
    inputs: dict[str, Any] = {}
    for slot, encoder in model.encoders.items():
        if isinstance(encoder, TextEncoder):
            vocab = int(getattr(encoder, "vocab_size", 0) or getattr(encoder.model.config, "vocab_size", 100))
            ids = torch.randint(1, min(vocab, 1000), (batch, length), generator=generator)
            mask = torch.ones(batch, length, dtype=torch.bool)
            mask[0, length // 2:] = False  # padding, so the mask really is exercised
            ids[0, length // 2:] = encoder.pad_token_id
            inputs[slot] = {"input_ids": ids, "attention_mask": mask}
            continue
        processor = model.processor[slot]
        raw = processor.example(batch)
        if raw is not None:  # the processor's own example (a table's rows)
            inputs[slot] = processor(raw)
            continue
        # else the size the processor makes: images (C, H, W), waveforms (samples,)
        size = getattr(processor, "data_config", {}).get("input_size")
        if size is None and getattr(processor, "num_samples", None):
            size = (int(processor.num_samples),)
        if size is None:
            raise InputError(f"cannot export input {slot!r} ({type(encoder).__name__}): its processor gives no "
                             "example() and no input size (data_config['input_size'] or num_samples) to build "
                             "an example from")
        inputs[slot] = torch.rand(batch, *size, generator=generator) * 2 - 1
    return inputs


class _Flat(nn.Module):
    """The model with flat positional tensors in and one tensor out (what ONNX
    needs): encoders, fusion and head as in ``MultimodalModel.forward``,
    without its Python-level checks of the batch (which a trace would freeze
    at the example's size). Every input is given, its ``present_<slot>``
    mask says which samples have it. The token features of each encoder are
    extra outputs (``tokens_<slot>``): the exporter drops a packed RNN whose
    padded outputs are unused, and they are useful features anyway."""

    def __init__(self, model, layout: list[tuple[str, str | None]]):
        super().__init__()
        self.model = model
        self.layout = layout
        self.slots = list(model.encoders)

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        inputs: dict[str, Any] = {}
        values = iter(tensors)
        for slot, key in self.layout:
            value = next(values)
            if key is None:
                inputs[slot] = value
            else:
                inputs.setdefault(slot, {})[key] = value
        feats, present = {}, {}
        for slot in self.slots:
            encoder = self.model.encoders[slot]
            prepared, content = encoder.prepare_input(inputs[slot], slot)
            mask = next(values)
            present[slot] = mask if content is None else mask & content
            feats[slot] = encoder(prepared)
        logits = self.model.head(self.model.fusion(feats, present))
        return (logits, *(feats[slot].tokens for slot in self.token_slots))

    @property
    def token_slots(self) -> list[str]:
        return [slot for slot in self.slots if self.model.encoders[slot].token_features is not None]


def _flatten(model, inputs: Mapping[str, Any]) -> tuple[list[str], list[Tensor], list[tuple[str, str | None]]]:
    names, tensors, layout = [], [], []
    for slot in model.encoders:
        value = inputs[slot]
        if isinstance(value, Mapping):  # token ids and mask, a table's numeric / missing / categorical parts
            for key, tensor in value.items():
                names.append(f"{slot}_{key}")
                tensors.append(tensor)
                layout.append((slot, key))
        else:
            names.append(slot)
            tensors.append(value)
            layout.append((slot, None))
    batch = tensors[0].shape[0]
    for slot in model.encoders:
        names.append(f"present_{slot}")
        tensors.append(torch.ones(batch, dtype=torch.bool))
    return names, tensors, layout


def _offending_part(model, inputs: Mapping[str, Any], error: BaseException) -> tuple[str, str]:
    """Which encoder or fusion cannot be exported (each tried on its own)."""
    import io
    import warnings

    for slot, encoder in model.encoders.items():
        class _One(nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = encoder

            def forward(self, *x):
                value = dict(zip(keys, x)) if keys else x[0]
                return self.encoder(self.encoder.prepare_input(value, slot)[0]).pooled

        keys = list(inputs[slot]) if isinstance(inputs[slot], Mapping) else None
        args = tuple(inputs[slot].values()) if keys else (inputs[slot],)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(_One().eval(), args, io.BytesIO(), dynamo=False)
        except Exception as exc:  # noqa: BLE001 - we only want to know whether it exports
            return f"encoder {slot!r} ({type(encoder).__name__})", f"{type(exc).__name__}: {_first_line(exc)}"
    return f"fusion {type(model.fusion).__name__}", f"{type(error).__name__}: {_first_line(error)}"


def _first_line(exc: BaseException) -> str:
    """The gist of an exporter error (they can carry a whole graph dump)."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def export_onnx(model, path: str | Path, *, opset: int = 17, atol: float = 1e-4) -> dict[str, Any]:
    """Export ``model`` to ONNX at ``path`` and check it with onnxruntime.

    Returns the record written next to it: input/output names, dynamic axes
    and the largest absolute difference to PyTorch on a check batch (which
    must be within ``atol``, else :class:`MMZooError`)."""
    import warnings

    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise MMZooError("ONNX export needs onnx and onnxruntime: pip install 'mmzoo[export]'") from exc
    from mmzoo.weights import atomic_write

    path = Path(path)
    model = model.eval()
    example = _example_inputs(model, batch=2, length=7)
    names, tensors, layout = _flatten(model, example)
    output = "logits" if model.num_classes else "embedding"
    flat = _Flat(model, layout).eval()  # a fresh module is in train mode, and the exporter restores it
    token_outputs = [f"tokens_{slot}" for slot in flat.token_slots]
    dynamic_axes = {name: {0: "batch"} for name in names}
    for name, (slot, _) in zip(names, layout):
        if isinstance(model.encoders[slot], TextEncoder):  # a table's columns are fixed; a text's length is not
            dynamic_axes[name][1] = "sequence"
    dynamic_axes[output] = {0: "batch"}
    dynamic_axes.update({name: {0: "batch", 1: "tokens"} for name in token_outputs})
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python-level checks
            torch.onnx.export(flat, tuple(tensors), str(path), input_names=names, output_names=[output, *token_outputs],
                              dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is reported with the part at fault
        part, reason = _offending_part(model, example, exc)
        raise MMZooError(f"cannot export {model.name!r} to ONNX: its {part} cannot be exported ({reason}); "
                         "use a model without that component for ONNX, or run it in PyTorch") from exc

    proto = onnx.load(str(path))
    record = {"name": model.name, "inputs": names, "output": output, "token_outputs": token_outputs,
              "dynamic_axes": dynamic_axes,
              "labels": model.labels, "opset": opset}
    onnx.helper.set_model_props(proto, {"mmzoo_inputs": json.dumps(names), "mmzoo_name": model.name})
    atomic_write(path, proto.SerializeToString())

    # parity on another batch size and sequence length than the one traced
    check = _example_inputs(model, batch=3, length=11)
    _, check_tensors, _ = _flatten(model, check)
    if len(model.encoders) > 1:
        check_tensors[-1][1] = False  # one sample misses its last input
    with torch.no_grad():
        expected = flat(*check_tensors)[0].numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {name: tensor.numpy() for name, tensor in zip(names, check_tensors)
            if name in {i.name for i in session.get_inputs()}}
    got = session.run([output], feed)[0]
    difference = float(abs(got - expected).max())
    record["max_abs_difference"] = difference
    if not difference <= atol:
        raise MMZooError(f"the ONNX export of {model.name!r} differs from PyTorch by {difference:.2e} "
                         f"(> {atol}); a component traces differently from how it runs")
    atomic_write(path.with_suffix(path.suffix + ".json"), json.dumps(record, indent=2).encode())
    return record


def export_command(args) -> int:
    from mmzoo.predict import load_model

    record = export_onnx(load_model(args.model), args.onnx, opset=args.opset, atol=args.atol)
    print(f"exported {record['name']} to {args.onnx}")
    print(f"inputs:  {', '.join(record['inputs'])}")
    print(f"output:  {record['output']}; onnxruntime matches PyTorch to {record['max_abs_difference']:.1e}")
    return 0
