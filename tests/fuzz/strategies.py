"""Hypothesis strategies for the fuzz suite: recipes (mostly valid, some values wild), data and eval
functions as a careful or careless user would pass them."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st

#: Values of the wrong type, size or sign, put where any field expects something else.
WILD = st.one_of(
    st.none(), st.booleans(), st.text(max_size=6), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.just(10**400), st.just(-1), st.just(4294967296),
    st.lists(st.integers(0, 3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
)


def often(valid: st.SearchStrategy, weight: int = 6) -> st.SearchStrategy:
    """``valid`` most of the time, a :data:`WILD` value otherwise."""
    return st.one_of(*([valid] * weight), WILD)


def selectors(names: list[str]) -> st.SearchStrategy:
    globs = st.sampled_from([*names, "*", "*conv*", "fc*", "no_such_layer", "[", ""])
    kinds = st.sampled_from(["conv", "dense", "depthwise_conv", "embedding", "attention", "recurrent", "bogus"])
    return st.fixed_dictionaries({}, optional={
        "names": often(st.lists(globs, min_size=1, max_size=3)),
        "kinds": often(st.lists(kinds, min_size=1, max_size=3)),
        "exclude": often(st.lists(globs, max_size=2)),
    })


def fine_tunes() -> st.SearchStrategy:
    return st.one_of(st.none(), st.fixed_dictionaries({}, optional={
        "epochs": often(st.integers(0, 1)),
        "batch_size": often(st.integers(1, 16)),
        "optimizer": often(st.sampled_from(["adam", "sgd", "rmsprop", "adamw", "lamb"])),
        "learning_rate": often(st.floats(1e-4, 0.1)),
        "loss": often(st.sampled_from(["sparse_categorical_crossentropy", "mse", "binary_crossentropy", "hinge"])),
        "from_logits": often(st.booleans()),
        "shuffle": often(st.booleans()),
    }))


def schedules() -> st.SearchStrategy:
    return st.fixed_dictionaries({}, optional={
        "kind": often(st.sampled_from(["polynomial", "constant", "linear", "exponential"])),
        "begin": often(st.floats(0, 1)), "end": often(st.floats(0, 1)),
        "every": often(st.integers(1, 20)), "initial": often(st.floats(0, 0.5)), "power": often(st.floats(0.5, 4)),
    })


@st.composite
def careful_prune(draw: Any, names: list[str]) -> dict:
    """A prune stage as a user who read the docs writes it: keys that fit its method."""
    method = draw(st.sampled_from(["magnitude", "channel", "n:m", "lottery"]))
    stage: dict[str, Any] = {"method": method}
    trains = method == "lottery" or draw(st.booleans())  # lottery prunes between rounds of training
    stage["fine_tune"] = {"epochs": 1, "batch_size": draw(st.sampled_from([8, 16]))} if trains else None
    if method == "n:m":
        m = draw(st.sampled_from([4, 8]))
        stage.update(n=draw(st.integers(1, m - 1)), m=m)
    else:
        stage["sparsity"] = draw(st.floats(0.0, 0.9))
        if method in ("magnitude", "lottery"):
            stage["scope"] = draw(st.sampled_from(["global", "layer"]))
        else:
            stage["criterion"] = draw(st.sampled_from(["l1", "l2", "fpgm", "bn_scale", "random"]))
            stage["round_to"] = draw(st.sampled_from([1, 2, 4]))
        if method == "lottery":  # 32 samples in batches of 8, 3 epochs: 12 steps, at least 3 a round
            stage["fine_tune"] = {"epochs": 3, "batch_size": 8}
            stage.update(rounds=draw(st.integers(1, 3)), rewind=draw(st.floats(0.0, 0.5)))
        elif trains and draw(st.booleans()):
            stage["schedule"] = {"begin": 0.0, "end": draw(st.floats(0.1, 1.0)), "every": draw(st.integers(1, 4))}
        prunable = [n for n in names if "bn" not in n and n != "logits"]
        if prunable and draw(st.booleans()):  # per-layer ratios on layers every method may select
            stage["overrides"] = draw(st.lists(st.fixed_dictionaries({
                "layers": st.fixed_dictionaries({"names": st.lists(st.sampled_from(prunable), min_size=1, max_size=2)}),
                "sparsity": st.floats(0.0, 0.9)}), min_size=1, max_size=2))
    if draw(st.booleans()):
        stage["layers"] = {"exclude": ["logits"]}
    return {"prune": stage}


@st.composite
def careful_quantize(draw: Any, names: list[str]) -> dict:
    method = draw(st.sampled_from(["static", "dynamic", "qat"]))
    stage: dict[str, Any] = {"method": method,
                             "weights": {"per_channel": draw(st.booleans()), "symmetric": draw(st.booleans())}}
    if method == "static":
        calibration = draw(st.sampled_from(["minmax", "percentile", "entropy", "mse"]))
        stage["activations"] = {"calibration": calibration, "samples": draw(st.integers(2, 32))}
        if calibration == "percentile":
            stage["activations"]["percentile"] = draw(st.floats(99.0, 100.0))
        stage["fold_batchnorm"] = draw(st.booleans())
    if method == "qat":
        stage["fine_tune"] = {"epochs": 1, "batch_size": 16}
    if draw(st.booleans()):
        stage["layers"] = {"names": draw(st.lists(st.sampled_from([n for n in names if "bn" not in n] or ["*"]),
                                                  min_size=1, max_size=3, unique=True))}
    return {"quantize": stage}


@st.composite
def careful_recipes(draw: Any, names: list[str]) -> dict:
    stages = [draw(careful_prune(names))] if draw(st.booleans()) else []
    if not stages or draw(st.booleans()):
        stages.append(draw(careful_quantize(names)))
    return {"version": 1, "seed": draw(st.integers(0, 2**32 - 1)), "stages": stages}


def prune_stages(names: list[str]) -> st.SearchStrategy:
    methods = st.sampled_from(["magnitude", "channel", "n:m", "lottery"])
    return st.fixed_dictionaries({"method": often(methods, 10)}, optional={
        "sparsity": often(st.floats(0.0, 0.95)),
        "scope": often(st.sampled_from(["global", "layer"])),
        "schedule": often(schedules()),
        "layers": selectors(names),
        "fine_tune": fine_tunes(),
        "criterion": often(st.sampled_from(["l1", "l2", "fpgm", "bn_scale", "taylor", "apoz", "random", "x"])),
        "round_to": often(st.integers(1, 8)),
        "n": often(st.integers(1, 4)), "m": often(st.integers(2, 8)),
        "rounds": often(st.integers(0, 5)), "rewind": often(st.floats(-0.5, 1.5)),
        "overrides": often(st.lists(st.fixed_dictionaries({}, optional={
            "layers": selectors(names), "sparsity": often(st.floats(0.0, 0.95))}), max_size=2)),
    }).map(lambda d: {"prune": d})


def quantize_stages(names: list[str]) -> st.SearchStrategy:
    weights = st.fixed_dictionaries({}, optional={
        "bits": often(st.integers(1, 8)), "per_channel": often(st.booleans()),
        "symmetric": often(st.booleans()), "reduce_range": often(st.booleans()),
        "learn": often(st.sampled_from(["minmax", "lsq", "dorefa", "bnn"])),
    })
    activations = st.fixed_dictionaries({}, optional={
        "bits": often(st.integers(1, 8)), "learn": often(st.sampled_from(["ema", "lsq", "dorefa", "bnn"])),
        "calibration": often(st.sampled_from(["minmax", "percentile", "entropy", "mse", "kl"])),
        "samples": often(st.integers(1, 64)), "percentile": often(st.floats(90, 100)),
        "symmetric": often(st.booleans()),
    })
    return st.fixed_dictionaries({"method": often(st.sampled_from(["static", "dynamic", "qat"]), 10)}, optional={
        "weights": often(weights), "activations": often(activations), "layers": selectors(names),
        "fine_tune": fine_tunes(), "fold_batchnorm": often(st.booleans()),
        "overrides": often(st.lists(st.fixed_dictionaries({"layers": selectors(names), "weights": weights}),
                                    max_size=1)),
        "max_float_share": often(st.floats(0, 0.5)),
    }).map(lambda d: {"quantize": d})


def recipes(names: list[str], wild: bool = True) -> st.SearchStrategy:
    """A recipe dict: version, seed, default selector and fine-tuning, 1-2 stages, export settings;
    with ``wild``, keys in the wrong place, values of any type now and then, unknown stages and keys.
    Without, what a careful user writes: keys that fit each method."""
    if not wild:
        return careful_recipes(names)
    stage = st.one_of(prune_stages(names), quantize_stages(names), st.just({"distill": {}}), WILD)
    optional = {
        "version": often(st.just(1)),
        "seed": often(st.integers(0, 2**32 - 1)),
        "layers": selectors(names),
        "fine_tune": fine_tunes(),
        "export": often(st.fixed_dictionaries({"onnx": st.fixed_dictionaries({}, optional={
            "opset": often(st.sampled_from([13, 17, 19, 21])), "verify": often(st.booleans()),
            "tolerance": often(st.floats(1e-6, 1e-2))})})),
        "surprise": WILD,
    }
    return st.fixed_dictionaries({"stages": often(st.lists(stage, min_size=1, max_size=2), 12)},
                                 optional=optional)


def bad_or_good_arrays(x: np.ndarray, y: np.ndarray, classes: int, wild: bool = True) -> st.SearchStrategy:
    """(x, y) as given, or (with ``wild``) spoiled in one of the ways users spoil it."""
    def spoil(kind: str) -> tuple[Any, Any]:
        if kind == "nan":
            bad = x.copy()
            bad.flat[0] = math.nan
            return bad, y
        if kind == "labels_out_of_range":
            return x, y + classes
        if kind == "float_labels":
            return x, y.astype(np.float32) + 0.5
        if kind == "labels_2d":
            return x, y.reshape(-1, 1)
        if kind == "few_labels":
            return x, y[: len(y) // 2]
        if kind == "float64":
            return x.astype(np.float64), y
        if kind == "wrong_shape":
            return x[..., :1], y
        if kind == "no_labels":
            return x, None
        if kind == "empty":
            return x[:0], y[:0]
        return x, y
    if not wild:
        return st.just((x, y))
    kinds = ["good"] * 4 + ["nan", "labels_out_of_range", "float_labels", "labels_2d", "few_labels", "float64",
                            "wrong_shape", "no_labels", "empty"]
    return st.sampled_from(kinds).map(spoil)


def eval_fns(wild: bool = True) -> st.SearchStrategy:
    """None, or a callable(model) returning a number, or (``wild``) None, a string, an array, NaN, or
    raising."""
    def raising(model: Any) -> float:
        raise RuntimeError("the user's metric broke")
    returns: list[Callable[[Any], Any]] = [
        lambda m: 0.5, lambda m: None, lambda m: "0.9", lambda m: np.ones(3), lambda m: math.nan,
        lambda m: np.float32(0.25), raising,
    ]
    if not wild:
        return st.one_of(st.none(), st.just(lambda m: 0.5))
    return st.one_of(st.none(), st.sampled_from(returns))
