"""``slimkit inspect``: a model's layers, weights, MACs, sparsity, prunable channel groups and
quantizable layers (see :mod:`slimkit.cli.summary`)."""

from __future__ import annotations

import json

import click

from slimkit.cli.errors import EXIT_HELP, debug_option, guarded
from slimkit.cli.loading import load_data, load_model, sample_for
from slimkit.cli.options import input_shape_option, model_file_options, parse_shape
from slimkit.cli.summary import OTHER_OPS, ModelSummary, summarize
from slimkit.errors import DataError


@click.command(epilog=EXIT_HELP)
@click.argument("model_path", metavar="MODEL")
@click.option("--data", "data_spec", metavar="FILE|MODULE:FN",
              help="Sample inputs (.npz, .npy or module:function) to trace the model and count MACs at their shape.")
@input_shape_option
@model_file_options
@click.option("--macs", "macs", type=click.Choice(["layers", "onnx", "none"]), default="layers", show_default=True,
              help="How MACs are counted: from each conv/dense layer's output size on one sample (fast), on the "
                   "float ONNX export (every Conv/Gemm/MatMul, attention products included; seconds on large "
                   "models), or not at all.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@debug_option
@guarded
def inspect(model_path: str, data_spec: str | None, input_shape: str | None, factory: str | None, trust: bool,
            macs: str, as_json: bool) -> None:
    """Describe MODEL: what slimkit can prune and quantize in it.

    Per layer: kind, weights (batch-norm statistics included, as Keras' count_params), sparsity of the
    matrices pruning acts on, multiply-accumulates per sample (MACs), the channel group it
    produces, and whether int8 quantization gives it an integer kernel. Then the channel groups
    structured pruning removes channels from, and the channels it must leave whole, with why.

    \b
      slimkit inspect model.keras
      slimkit inspect resnet50.pt --factory torchvision.models:resnet50 --input-shape 3,224,224
    """
    shape = parse_shape(input_shape)
    loaded = load_model(model_path, factory, trust, "MODEL")
    data = load_data(data_spec, "--data") if data_spec else None
    try:
        sample = sample_for(loaded.model, data, shape, count=2)
    except DataError:
        if data is not None or shape is not None:
            raise
        sample = None  # PyTorch without --data/--input-shape: layers and weights only
    what = f"--data {data_spec}" if data_spec else f"--input-shape {input_shape}" if input_shape else "sample"
    summary = summarize(loaded.model, sample, None if macs == "none" else macs, what)
    if sample is None:
        summary.notes.append("no sample inputs (--data or --input-shape): MACs, channel groups and quantization "
                             "sites need them for this model")
    click.echo(json.dumps(summary.to_dict(), indent=2) if as_json else render(summary, model_path))


def render(s: ModelSummary, title: str) -> str:
    """The summary as text tables."""
    head = ["layer", "kind", "type", "params", "sparsity", "MACs", "group", "int8"]
    body = [[r.name, r.kind, r.type_name, f"{r.params:,}", "-" if r.sparsity is None else f"{r.sparsity:.1%}", _si(r.macs),
             "-" if r.group is None else str(r.group), r.quant] for r in s.layers]
    if s.other_macs:
        body.append([OTHER_OPS, "", "", "", "", _si(s.other_macs), "", ""])
    lines = [f"{title} ({s.framework}): {s.params:,} weights, "
             + (f"{_si(s.macs)} MACs per sample" if s.macs is not None else "MACs not counted"), ""]
    lines += _table(head, body, right={3, 4, 5})
    if s.groups:
        lines += ["", f"channel groups structured pruning can remove channels from ({len(s.groups)}):"]
        lines += _table(["group", "producers", "channels", "layers"],
                        [[str(i), ", ".join(g.producers), str(g.channels), str(g.members)]
                         for i, g in enumerate(s.groups)], right={2, 3})
    if s.attention_blocks:
        lines += ["", "attention blocks (whole heads removable): "
                  + ", ".join(f"{n} ({h} heads)" for n, h in s.attention_blocks)]
    if s.blocked:
        lines += ["", f"channels left whole ({len(s.blocked)}):"]
        lines += [f"  {', '.join(names[:4])}{', ...' if len(names) > 4 else ''}: {why}" for names, why in s.blocked]
    if s.activation_sites is not None:
        count = sum(1 for r in s.layers if r.quant == "int8")
        lines += ["", f"int8: {count} layer(s) with integer kernels, {s.activation_sites} activation tensor(s) "
                      "quantized (static)"]
    if s.notes:
        lines += [""] + [f"note: {n}" for n in s.notes]
    return "\n".join(lines)


def _table(head: list[str], body: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(c) for c in col) for col in zip(head, *body)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(head), "  ".join("-" * w for w in widths), *(line(r) for r in body)]


def _si(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)
