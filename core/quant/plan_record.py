"""A :class:`~slimkit.quant.plan.QuantPlan` as plain JSON values, for model folders (``slimkit.save``).

Frameworks whose saved files hold no code (PyTorch) rebuild a fake-quant model by replaying the plan
it was built from on a fresh instance of the architecture; the folder's manifest keeps that plan in
this form. Reading is strict: a record that is not exactly what :func:`plan_to_record` writes raises
ValueError naming the field, so a damaged or hand-edited manifest never builds a different model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from slimkit.quant.plan import ActSite, FakeQuantSpec, LayerSite, QuantPlan

_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(FakeQuantSpec))
_INTS = ("qmin", "qmax", "bits")
_BOOLS = ("symmetric", "signed")


def plan_to_record(plan: QuantPlan) -> dict[str, Any]:
    """``plan`` as a dict of JSON values (sites in plan order)."""
    return {
        "method": plan.method,
        "acts": [{"node": a.node, "spec": dataclasses.asdict(a.spec)} for a in plan.acts],
        "layers": [{"layer": s.layer, "node": s.node, "kernel": dataclasses.asdict(s.kernel), "input": s.input,
                    "output": s.output} for s in plan.layers],
    }


def plan_from_record(record: Any, where: str = "quant.plan") -> QuantPlan:
    """The plan :func:`plan_to_record` wrote.

    Raises:
        ValueError: ``record`` is not such a dict; the message names the field under ``where``.
    """
    rec = _dict(record, where, ("method", "acts", "layers"))
    acts = []
    for i, raw in enumerate(_list(rec["acts"], f"{where}.acts")):
        at = f"{where}.acts[{i}]"
        a = _dict(raw, at, ("node", "spec"))
        acts.append(ActSite(_str(a, "node", at), _spec(a["spec"], f"{at}.spec")))
    layers = []
    for i, raw in enumerate(_list(rec["layers"], f"{where}.layers")):
        at = f"{where}.layers[{i}]"
        s = _dict(raw, at, ("layer", "node", "kernel", "input", "output"))
        layers.append(LayerSite(_str(s, "layer", at), _str(s, "node", at), _spec(s["kernel"], f"{at}.kernel"),
                                _str(s, "input", at, optional=True), _str(s, "output", at, optional=True)))
    return QuantPlan(tuple(acts), tuple(layers), _str(rec, "method", where))


def _dict(value: Any, where: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object, got {type(value).__name__}")
    missing = [k for k in keys if k not in value]
    extra = sorted(set(value) - set(keys))
    if missing or extra:
        raise ValueError(f"{where} " + (f"lacks {missing[0]!r}" if missing else f"has unknown key {extra[0]!r}"))
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list, got {type(value).__name__}")
    return value


def _str(d: dict[str, Any], key: str, where: str, optional: bool = False) -> Any:
    value = d[key]
    if (value is None and optional) or isinstance(value, str):
        return value
    raise ValueError(f"{where}.{key} must be a string{' or null' if optional else ''}, got {value!r}")


def _spec(value: Any, where: str) -> FakeQuantSpec:
    d = _dict(value, where, _SPEC_FIELDS)
    for key in _INTS:
        if type(d[key]) is not int:
            raise ValueError(f"{where}.{key} must be an integer, got {d[key]!r}")
    for key in _BOOLS:
        if type(d[key]) is not bool:
            raise ValueError(f"{where}.{key} must be true or false, got {d[key]!r}")
    if d["axis"] is not None and type(d["axis"]) is not int:
        raise ValueError(f"{where}.axis must be an integer or null, got {d['axis']!r}")
    if not isinstance(d["momentum"], (int, float)) or isinstance(d["momentum"], bool):
        raise ValueError(f"{where}.momentum must be a number, got {d['momentum']!r}")
    if not isinstance(d["mode"], str):
        raise ValueError(f"{where}.mode must be a string, got {d['mode']!r}")
    try:
        return FakeQuantSpec(**{**d, "momentum": float(d["momentum"])})
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
