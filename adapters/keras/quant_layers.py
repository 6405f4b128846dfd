"""The Keras layers of fake quantization: :class:`FakeQuant` (one site) and :class:`QuantLayer` (a
Conv/DepthwiseConv/Dense computing with its fake-quantized kernel and bias).

The arithmetic and the modes are core's (:mod:`slimkit.quant.fake_quant`); these layers hold each
site's variables. Both are registered Keras serializables (package ``slimkit``) holding only plain
values in their configs, so a fake-quant model saves to ``.keras`` and loads back with
``safe_mode=True`` once this module is imported: ``slimkit.load`` imports it, and so does
``import slimkit`` when Keras is already imported (see :mod:`.saving`).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from slimkit.errors import UnsupportedModelError
from slimkit.quant import fake_quant
from slimkit.quant.plan import FakeQuantSpec, SiteParams

from .ops import KERAS_OPS


@keras.saving.register_keras_serializable(package="slimkit")
class FakeQuant(keras.layers.Layer):
    """One fake-quant site: quantizes then dequantizes a tensor (or a layer's kernel or bias).

    Every mode keeps the same variables (``scale``, ``zero_point``, ``min``, ``max``, ``ready``), so
    switching a site to ``fixed`` changes no saved structure. Per-channel variables have shape
    ``(C,)`` along ``axis``; per-tensor ones are scalars.

    Args:
        qmin, qmax, symmetric, axis, mode, momentum, bits, signed: the
            :class:`~slimkit.quant.plan.FakeQuantSpec`.
        site: the site key (activation node name, ``<layer>/kernel`` or ``<layer>/bias``).
        role: ``activation`` (a tensor with a batch axis), ``kernel`` or ``bias``.
        method: the plan's method.
        index: the site's position in the plan (activation sites) for :func:`read_plan`.
    """

    slimkit_fake_quant = "activation"

    def __init__(self, qmin: int, qmax: int, symmetric: bool, axis: int | None = None, mode: str = "fixed",
                 momentum: float = 0.9, bits: int = 8, signed: bool = True, site: str = "",
                 role: str = "activation", method: str = "static", index: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Validates mode and range the way the plan does.
        FakeQuantSpec(int(qmin), int(qmax), bool(symmetric), axis, mode, float(momentum), int(bits), bool(signed))
        self.qmin, self.qmax, self.symmetric = int(qmin), int(qmax), bool(symmetric)
        self.axis = None if axis is None else int(axis)
        self.mode, self.momentum, self.bits, self.signed = mode, float(momentum), int(bits), bool(signed)
        self.site, self.role, self.method, self.index = site, role, method, int(index)

    @property
    def spec(self) -> FakeQuantSpec:
        """The site's current spec (``fixed`` once parameters were set)."""
        return FakeQuantSpec(self.qmin, self.qmax, self.symmetric, self.axis, self.mode, self.momentum,
                             self.bits, self.signed)

    def build(self, input_shape: Any) -> None:
        shape: tuple[int, ...] = ()
        self._rank = rank = len(input_shape)
        if self.axis is not None:
            if not -rank <= self.axis < rank or input_shape[self.axis] is None:
                raise UnsupportedModelError(
                    f"fake-quant site {self.site!r}: per-channel axis {self.axis} does not fit a tensor "
                    f"of shape {tuple(input_shape)}"
                )
            shape = (int(input_shape[self.axis]),)

        def weight(name: str, init: Any, trainable: bool = False, shape: tuple[int, ...] = shape) -> Any:
            return self.add_weight(name=name, shape=shape, initializer=init, trainable=trainable,
                                   autocast=False, dtype="float32")

        self.scale = weight("scale", "ones", trainable=fake_quant.mode_of(self.mode).learns_scale)
        self.zero_point = weight("zero_point", "zeros")
        self.range_min = weight("min", keras.initializers.Constant(float("nan")))
        self.range_max = weight("max", keras.initializers.Constant(float("nan")))
        self.ready = weight("ready", "zeros", shape=())  # fixed: params set; lsq: scale initialized

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.fake_quantize(inputs, training)

    # -- forward: core's fake quantization ---------------------------------------------------
    def fake_quantize(self, x: Any, training: bool | None = None) -> Any:
        """The fake-quantized ``x`` (same dtype) as :func:`slimkit.quant.fake_quant.forward` computes
        it; ``training`` lets ema ranges and lsq's first scale update."""
        dtype = x.dtype
        y = fake_quant.forward(KERAS_OPS, self, ops.cast(x, "float32"), bool(training))
        return ops.cast(y, dtype)

    # -- state -------------------------------------------------------------------------------
    def _channels(self) -> int | None:
        return int(self.scale.shape[0]) if len(self.scale.shape) else None

    def check_params(self, params: SiteParams) -> None:
        """Raises ValueError, naming the site, if ``params`` do not fit it."""
        fake_quant.check_params(self, self._channels(), params, self._rank)

    def set_params(self, params: SiteParams) -> bool:
        """Sets scale and zero point; returns True if the site's mode or range changed.

        The mode changes as :func:`slimkit.quant.fake_quant.mode_after_params` says (lsq learns on
        from them, dynamic stays dynamic, every other mode becomes fixed).

        Raises:
            ValueError: the parameters do not fit the site (the site is left unchanged).
        """
        scale, zp = fake_quant.check_params(self, self._channels(), params, self._rank)
        before = (self.mode, self.qmin, self.qmax)
        if fake_quant.range_follows_params(self.mode):
            self.qmin, self.qmax = int(params.qmin), int(params.qmax)
        self.mode = fake_quant.mode_after_params(self.mode)
        self.scale.trainable = fake_quant.mode_of(self.mode).learns_scale
        self.scale.assign(scale)
        self.zero_point.assign(zp)
        self.ready.assign(np.float32(1.0))
        return (self.mode, self.qmin, self.qmax) != before

    def state(self) -> dict[str, np.ndarray]:
        """What the site holds (:meth:`slimkit.quant.modes.Mode.state`)."""
        values = {"scale": self.scale.numpy(), "zero_point": self.zero_point.numpy(),
                  "range_min": self.range_min.numpy(), "range_max": self.range_max.numpy(),
                  "ready": self.ready.numpy()}
        return fake_quant.state_of(self.mode, values)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(qmin=self.qmin, qmax=self.qmax, symmetric=self.symmetric, axis=self.axis, mode=self.mode,
                      momentum=self.momentum, bits=self.bits, signed=self.signed, site=self.site,
                      role=self.role, method=self.method, index=self.index)
        return config


def kind_of(layer: Any) -> str | None:
    """``conv``, ``depthwise_conv`` or ``dense`` for the layer classes a :class:`QuantLayer` computes."""
    lay = keras.layers
    if type(layer) in (lay.Conv1D, lay.Conv2D, lay.Conv3D):
        return "conv"
    if type(layer) in (lay.DepthwiseConv1D, lay.DepthwiseConv2D):
        return "depthwise_conv"
    if type(layer) is lay.Dense:
        return "dense"
    return None


@keras.saving.register_keras_serializable(package="slimkit")
class QuantLayer(keras.layers.Wrapper):
    """A Conv/DepthwiseConv/Dense layer computing with its fake-quantized kernel and bias.

    The wrapped layer keeps its variables (and so any constraint on them); this layer reads them,
    fake-quantizes them with ``kernel_quantizer`` and ``bias_quantizer``, and computes the wrapped
    layer's op, bias and activation itself. Named like the wrapped layer.

    Args:
        layer: the layer to wrap (unbuilt or built).
        kernel_quantizer: :class:`FakeQuant` config of the kernel.
        bias_quantizer: :class:`FakeQuant` config of the bias (``fixed``, int32 range).
        site: the :class:`~slimkit.quant.plan.LayerSite`'s ``layer``, ``node``, ``input``, ``output``.
        index: the site's position in the plan, for :func:`read_plan`.
    """

    slimkit_fake_quant = "layer"

    def __init__(self, layer: Any, kernel_quantizer: dict[str, Any], bias_quantizer: dict[str, Any],
                 site: dict[str, Any], index: int = 0, **kwargs: Any) -> None:
        super().__init__(layer, **kwargs)
        if kind_of(layer) is None:
            raise UnsupportedModelError(
                f"layer {layer.name!r} ({type(layer).__name__}) cannot be fake-quantized; slimkit quantizes "
                "Conv1D/2D/3D, DepthwiseConv1D/2D and Dense layers"
            )
        self.kernel_quantizer = FakeQuant.from_config(dict(kernel_quantizer))
        self.bias_quantizer = FakeQuant.from_config(dict(bias_quantizer))
        self.site = dict(site)
        self.index = int(index)

    def build(self, input_shape: Any = None) -> None:
        lay = self.layer
        if not lay.built:
            lay.build(input_shape)
        kernel_shape = tuple(int(d) for d in lay.kernel.shape)
        self.kernel_quantizer.build(kernel_shape)
        if lay.use_bias:
            out = int(lay.bias.shape[0])
        elif kind_of(lay) == "depthwise_conv":
            out = kernel_shape[-2] * kernel_shape[-1]
        else:
            out = kernel_shape[-1]
        # Built even without a bias: "<layer>/bias" stays a valid site key, as plans list it.
        self.bias_quantizer.build((out,))
        self.built = True

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        lay = self.layer
        kernel = self.kernel_quantizer.fake_quantize(lay.kernel, training)
        bias = self.bias_quantizer.fake_quantize(lay.bias, training) if lay.use_bias else None
        kind = kind_of(lay)
        # The wrapped layer's own call, with the quantized weights (Keras 3's Dense / BaseConv /
        # BaseDepthwiseConv call()).
        if kind == "dense":
            y = ops.matmul(inputs, kernel)
            if bias is not None:
                y = ops.add(y, bias)
        else:
            if kind == "conv":
                y = lay.convolution_op(inputs, kernel)
            else:
                y = ops.depthwise_conv(inputs, kernel, strides=lay.strides, padding=lay.padding,
                                       dilation_rate=lay.dilation_rate, data_format=lay.data_format)
            if bias is not None:
                channels = int(bias.shape[0])
                shape = (1,) * (lay.rank + 1) + (channels,) if lay.data_format == "channels_last" \
                    else (1, channels) + (1,) * lay.rank
                y = ops.add(y, ops.reshape(bias, shape))
        if lay.activation is not None:
            y = lay.activation(y)
        return y

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(kernel_quantizer=self.kernel_quantizer.get_config(),
                      bias_quantizer=self.bias_quantizer.get_config(), site=dict(self.site), index=self.index)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> "QuantLayer":
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"), custom_objects=custom_objects)
        return cls(layer, **config)
