"""Ready-made student architectures: :class:`MLP` and :class:`CNN` (Flax NNX) and
:class:`LinenMLP` (linen), re-exported by :mod:`mtbkd_jax.students` and the top level."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen, nnx

from mtbkd_jax._checks import layer_widths, require_count

__all__ = ["MLP", "CNN", "LinenMLP"]


class MLP(nnx.Module):
    """A multilayer perceptron with tanh or relu units: the inputs, the hidden layers, then
    ``num_classes`` logits.

    Args:
        in_features: input dimension.
        num_classes: number of classes C (output logits).
        hidden: widths of the hidden layers, e.g. ``(16,)`` (``()``: no hidden layer).
        activation: ``"tanh"`` (smooth, friendlier to NUTS) or ``"relu"``.
        rngs: ``flax.nnx.Rngs`` for the initial weights.

    ``architecture`` (``"2-16-5 tanh"``) enters the settings, so checkpoints tell units apart.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        hidden: Sequence[int] = (32,),
        activation: str = "tanh",
        rngs: nnx.Rngs,
    ) -> None:
        if activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be 'tanh' or 'relu', got {activation!r}")
        hidden = layer_widths(hidden, "hidden", "(16,)")
        in_features = require_count(in_features, "in_features")
        sizes = [in_features, *hidden, require_count(num_classes, "num_classes", 2)]
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        )
        self.activation, self.architecture = activation, f"{'-'.join(map(str, sizes))} {activation}"

    def __call__(self, x: jax.Array) -> jax.Array:
        act = jnp.tanh if self.activation == "tanh" else jax.nn.relu
        for layer in self.layers[:-1]:
            x = act(layer(x))
        return self.layers[-1](x)


class CNN(nnx.Module):
    """A small convolutional network for images (N, H, W, channels) or flattened (N, H*W*ch).

    Two 3x3 convolutions with tanh and 2x2 average pooling, then a linear layer.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        *,
        channels: Sequence[int] = (8, 16),
        rngs: nnx.Rngs,
    ) -> None:
        channels = layer_widths(channels, "channels", "(8, 16)")
        num_classes = require_count(num_classes, "num_classes", 2)
        sizes = layer_widths(image_shape, "image_shape", "(28, 28, 1)")
        height, width, in_channels = (*sizes, 0, 0, 0)[:3]
        if len(sizes) != 3 or min(height, width) >> len(channels) < 1:
            raise ValueError(
                f"image_shape must be (height, width, channels) with height and width at least "
                f"2**{len(channels)} (one 2x2 pooling per layer), got {tuple(image_shape)}"
            )
        self.image_shape = (height, width, in_channels)
        convs, c_in = [], in_channels
        for c_out in channels:
            convs.append(nnx.Conv(c_in, c_out, kernel_size=(3, 3), rngs=rngs))
            c_in = c_out
            height, width = height // 2, width // 2
        self.convs = nnx.List(convs)
        self.head = nnx.Linear(height * width * c_in, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        height, width, channels = self.image_shape
        flat = (height * width * channels,)
        grey = ((height, width),) if channels == 1 else ()  # (N, H, W): one channel, implied
        if tuple(x.shape[1:]) not in (self.image_shape, flat, *grey):  # not reshuffled silently
            raise ValueError(
                f"the CNN takes images of shape (N, {height}, {width}, {channels}) (height, "
                f"width, channels) or flattened (N, {flat[0]}), got {tuple(x.shape)}"
            )
        x = x.reshape((x.shape[0], *self.image_shape))
        for conv in self.convs:
            x = jnp.tanh(conv(x))
            x = nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        return self.head(x.reshape((x.shape[0], -1)))


class LinenMLP(linen.Module):
    """The linen counterpart of :class:`MLP` (for users of ``flax.linen``)."""

    num_classes: int
    hidden: Sequence[int] = (32,)

    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = jnp.tanh(linen.Dense(width)(x))
        return linen.Dense(self.num_classes)(x)
