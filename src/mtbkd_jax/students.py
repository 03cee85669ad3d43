"""Flax students lifted into NumPyro, and a few ready-made architectures.

A :class:`Student` wraps a Flax NNX module (an instance) or a linen module and lifts it with
NumPyro's own ``random_nnx_module`` / ``random_flax_module``: every weight becomes a sample site
with the base prior. Site names are ``<name>.<dotted path>`` (for example
``student.layers.0.kernel``): NumPyro's default divider '/' is replaced by '.', because ArviZ
1.x rejects '/' in variable names.

Partial-Bayesian students (the paper's setting: a frozen feature extractor, a Bayesian head)
take a ``feature_extractor``: a fixed function applied *once* to the inputs by the inference
front-ends (:meth:`Student.featurize`), never inside the potential.

BatchNorm and Dropout work in evaluation mode (``module.eval()``); in training mode they are
refused (an example's likelihood would depend on its batch: ``mtbkd_jax._layer_state``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from flax import errors as flax_errors
from flax import linen, nnx
from numpyro import handlers
from numpyro.contrib.module import random_flax_module, random_nnx_module

from mtbkd_jax import _layer_state
from mtbkd_jax._checks import check_prior_form
from mtbkd_jax._deprecation import warn_renamed
from mtbkd_jax._linen_students import check_dict_prior_complete, split_bound
from mtbkd_jax._network_dtypes import at_least_float32, integer_ids_error, takes_integers
from mtbkd_jax._prior_digest import prior_digest
from mtbkd_jax._tracing import DotDivider, abstract_trace
from mtbkd_jax.architectures import CNN, MLP, LinenMLP
from mtbkd_jax.priors import check_prior_names, normal_prior
from mtbkd_jax.scale_priors import chain_groups

__all__ = ["Student", "MLP", "CNN", "LinenMLP"]

# set while a Student's inputs are known to be features (the canonical model's, whose front-ends
# applied the extractor): only then may a Student with a feature_extractor build its network
_FEATURES_GIVEN: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "mtbkd_features_given", default=False
)


@contextlib.contextmanager
def _features_given() -> Iterator[None]:
    """Inside: the students' inputs are features, the extractor applied (the canonical model's
    code; not for a model of your own, whose inputs reach the network as they are given)."""
    token = _FEATURES_GIVEN.set(True)
    try:
        yield
    finally:
        _FEATURES_GIVEN.reset(token)


if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    # what a student's base prior may be (see :class:`Student`): a distribution on every
    # weight, a ``(name, shape) -> Distribution`` callable, or a dict of path -> distribution
    type _PriorSpec = (
        dist.Distribution
        | Callable[[str, tuple[int, ...]], dist.Distribution]
        | Mapping[str, dist.Distribution]
    )


class Student:
    """A Flax network whose weights are NumPyro sample sites.

    Args:
        module: a ``flax.nnx.Module`` instance (already initialised) or a ``flax.linen.Module``
            (bound to trained variables, ``module.bind(variables)``, its collections other
            than ``params``, such as a BatchNorm's ``batch_stats``, are kept as constants;
            the weights are sampled whatever their bound values).
        prior: the base prior, a ``(name, shape) -> Distribution`` callable, a distribution, or
            a dict (see :func:`mtbkd_jax.normal_prior`); default ``Normal(0, 1)`` on every weight.
            A dict samples the weights it names; for an NNX module the others are
            ``numpyro.param`` sites, which ``run_map`` and ``run_svi`` fit
            (``Posterior.fitted_params``) and NUTS and SG-MCMC keep at the module's values.
            A linen student keeps no values for the others (a bound module's parameters are
            not used), so its dict prior must give every parameter a distribution (a
            ``ValueError`` names those left out when the parameter names are known: a run's
            start, or :meth:`network` in a model of your own).
        name: prefix of the weight sites.
        feature_extractor: an optional frozen function ``x -> features`` (a pretrained Flax
            module, ``functools.partial(linen_module.apply, variables)``, any JAX function);
            the network above is then a Bayesian head on these features.

    Example:
        >>> from flax import nnx
        >>> from mtbkd_jax import Student, MLP
        >>> student = Student(MLP(64, 10, hidden=(16,), rngs=nnx.Rngs(0)))
        >>> student.name
        'student'
    """

    def __init__(
        self,
        module: nnx.Module | linen.Module,
        *,
        prior: _PriorSpec | None = None,
        name: str = "student",
        feature_extractor: Callable[..., Any] | None = None,
    ) -> None:
        if not isinstance(module, nnx.Module | linen.Module):
            raise TypeError(
                "module must be a flax.nnx.Module instance or a flax.linen.Module, "
                f"got {type(module).__name__}"
            )
        if not name or "/" in name or "." in name:
            raise ValueError(f"name must be non-empty without '/' or '.', got {name!r}")
        if feature_extractor is not None and not callable(feature_extractor):
            raise TypeError(
                f"feature_extractor must be callable, got {type(feature_extractor).__name__}"
            )
        check_prior_form(prior)
        self.module = module
        # a linen module bound to variables: unbound to lift, its batch_stats etc. kept
        self._linen_module, self._linen_state = split_bound(module)
        self.prior = normal_prior(1.0) if prior is None else prior
        self.name = name
        self.feature_extractor = feature_extractor
        self._featurize_jit = jax.jit(feature_extractor) if feature_extractor else None
        self._classes_for: dict[tuple, int] = {}  # feature shapes checked -> output classes
        self._probed: set[tuple] = set()  # input shapes an NNX extractor was probed on
        self._prior_checked: set[tuple] = set()  # feature shapes a linen prior was checked on
        if self.is_nnx:  # an NNX module knows its parameters already: check the prior now
            check_prior_names(self.prior, self._all_parameter_names())

    def with_prior(self, prior: _PriorSpec | None) -> Student:
        """The same network and feature extractor under another base prior."""
        return Student(
            self.module, prior=prior, name=self.name, feature_extractor=self.feature_extractor
        )

    @property
    def is_nnx(self) -> bool:
        return isinstance(self.module, nnx.Module)

    def network(self, feature_shape: tuple[int, ...]) -> Callable[[jax.Array], jax.Array]:
        """Inside a NumPyro model: sample the weights once and return ``features -> logits``.
        A BatchNorm's statistics are fixed constants (a linen module's: those it is bound to,
        ``module.bind(variables)``, else their initial values).

        The returned callable can be applied to several inputs (labelled data and a transfer
        set) with the same weights. ``feature_shape`` is the shape of one example's features.

        Raises:
            ValueError: for a student with a ``feature_extractor`` inside a NumPyro model of
                your own: its inputs reach the network as the front-ends were given them, so
                the extractor would be skipped without a word (pass ``student.featurize(x)``
                as the inputs and lift the network without the extractor instead).
            ValueError: for a linen student whose base prior (a dict's keys,
                ``normal_prior(scales=...)``) names a parameter the network does not have,
                or is a dict that leaves a parameter out (checked once per
                ``feature_shape``, as an NNX student's names are on construction).
        """
        if self.feature_extractor is not None and not _FEATURES_GIVEN.get():
            raise ValueError(
                f"Student {self.name!r} has a feature_extractor, which only MTBKDModel's "
                "front-ends apply (once, to the inputs given to run_*): in a NumPyro model of "
                "your own the network would get the raw inputs. Apply it once yourself, "
                "features = student.featurize(x), give the features to run_* and to predict, "
                "and use mtbkd_jax.Student(student.module, prior=student.prior, "
                "name=student.name) in the model (a subclass of MTBKDModel: self.network)"
            )
        self._check_linen_prior(tuple(feature_shape))
        return self._network(feature_shape, self.prior)

    def _network(
        self, feature_shape: tuple[int, ...], prior: _PriorSpec
    ) -> Callable[[jax.Array], jax.Array]:
        with chain_groups(prior):  # a hierarchical prior's groups of several arrays
            if self.is_nnx:
                net = random_nnx_module(self.name, self.module, prior, scope_divider=".")
                return at_least_float32(net)
            module = self._linen_module
            state = _layer_state.linen_state_collections(module, feature_shape) or None
            with DotDivider(self.name):
                net = random_flax_module(
                    self.name, module, prior, input_shape=(1, *feature_shape), mutable=state
                )
            if state is not None:
                net = _layer_state.immutable(module, net, state, self._linen_state)
            return at_least_float32(net)

    def _check_linen_prior(self, feature_shape: tuple[int, ...]) -> None:
        """Refuse a linen student's base prior that names parameters the network does not
        have, or a dict prior that leaves some out (a linen student keeps no values for them);
        once per feature shape (an NNX student's prior is checked on construction). Nothing
        is raised if the network cannot take these features: its caller says so."""
        if self.is_nnx or feature_shape in self._prior_checked:
            return
        try:
            with handlers.block():  # inside a model: the abstract trace stays out of it
                names = self._all_parameter_names(feature_shape)
        except (TypeError, ValueError, flax_errors.FlaxError):
            return
        check_prior_names(self.prior, names)
        check_dict_prior_complete(self.prior, names, self.name)
        self._prior_checked.add(feature_shape)

    def _all_parameter_names(self, feature_shape: tuple[int, ...] | None = None) -> list[str]:
        """Every weight's dotted path, whatever the prior (a dict prior samples only the
        weights it names, so :meth:`parameter_names` lists only those)."""
        return list(self._parameter_shapes(feature_shape, normal_prior(1.0)))

    def parameter_shapes(self, feature_shape: tuple[int, ...] | None = None) -> dict:
        """Each weight's dotted path (``"layers.0.kernel"``) -> shape, without computing.

        A linen module needs ``feature_shape`` (one example's features) to know its shapes.
        """
        return self._parameter_shapes(feature_shape, self.prior)

    def _parameter_shapes(
        self, feature_shape: tuple[int, ...] | None, prior: _PriorSpec
    ) -> dict[str, tuple[int, ...]]:
        if not self.is_nnx and feature_shape is None:
            raise ValueError("feature_shape is needed for a linen module's parameter shapes")

        def sites() -> None:
            self._network(tuple(feature_shape or ()), prior)

        trace = jax.eval_shape(
            lambda: {
                name: site["value"]
                for name, site in abstract_trace(sites, (), {}).items()
                if site["type"] == "sample"
            }
        )
        prefix = self.name + "."
        return {k[len(prefix) :]: tuple(v.shape) for k, v in trace.items()}

    def prior_digest(self, feature_shape: tuple[int, ...] | None = None) -> str:
        """The base prior by value: each weight's prior log density at two fixed probe points,
        hashed (a prior given as a function, a distribution or a dict has no other stable
        description; its ``repr`` holds a memory address)."""
        return prior_digest(self.prior, self.parameter_shapes(feature_shape))

    def parameter_names(self, feature_shape: tuple[int, ...] | None = None) -> list[str]:
        """The weights' dotted paths (without the student's name prefix)."""
        return list(self.parameter_shapes(feature_shape))

    def check_inputs(
        self, features: ArrayLike, argument: str = "inputs", probe: bool = True
    ) -> int:
        """Check that the network accepts ``features`` (N, ...) and return its number of output
        classes (a ``ValueError`` naming ``argument`` otherwise): abstractly on one example, the
        base prior's names, and a probe on three rows refusing a training-mode BatchNorm or
        Dropout (unless ``probe=False``; the mode may change between runs)."""
        feature_shape = tuple(np.shape(features)[1:])
        if feature_shape in self._classes_for:
            if probe:
                self._check_per_example(features)
            return self._classes_for[feature_shape]
        self._check_linen_prior(feature_shape)
        example = jax.ShapeDtypeStruct((1, *feature_shape), jnp.float32)

        def logits(x: jax.Array) -> jax.Array:
            found: dict[str, jax.Array] = {}

            def model() -> None:
                found["logits"] = self(x)

            abstract_trace(model, (), {})
            return found["logits"]

        try:
            with _features_given():  # check_inputs is given features (its argument's docs)
                out = jax.eval_shape(logits, example)
        except _layer_state.LINEN_STATE_ERRORS as error:
            raise _layer_state.linen_state_error(self.name, error) from None
        except (TypeError, ValueError) as error:
            with _features_given():
                if takes_integers(logits, example.shape):
                    raise integer_ids_error(argument) from None
            expected = self.expected_feature_shape()
            wanted = f"the student expects {expected} per example" if expected else ""
            raise ValueError(
                f"{argument} has shape {tuple(np.shape(features))}: {feature_shape} per example, "
                f"which the student network cannot take{'; ' + wanted if wanted else ''} "
                f"({type(error).__name__}: {str(error).splitlines()[0][:200]})"
            ) from None
        if not hasattr(out, "shape"):  # a tuple of outputs, a dict of heads
            raise ValueError(
                "the student network must return one array of logits, shape (N, C), got "
                f"{type(out).__name__} for {argument}"
            )
        if len(out.shape) != 2:
            raise ValueError(
                f"the student network must return logits of shape (N, C), got {out.shape} "
                f"for {argument} of shape (1, {', '.join(map(str, feature_shape))})"
            )
        self._check_per_example(features)
        self._classes_for[feature_shape] = int(out.shape[-1])
        return int(out.shape[-1])

    def _check_per_example(self, features: ArrayLike) -> None:
        _layer_state.check_per_example(
            self._linen_module, features, name=self.name, given=self._linen_state
        )

    def expected_feature_shape(self) -> tuple[int, ...] | None:
        """The per-example feature shape the network takes, where it can be read off the
        module (an NNX network whose first layer is ``nnx.Linear``); else ``None``."""
        if not self.is_nnx:
            return None
        for _, node in nnx.iter_graph(self.module):
            if isinstance(node, nnx.Linear):
                return (int(node.in_features),)
            if isinstance(node, (nnx.Conv, nnx.Embed)):
                return None
        return None

    def __call__(self, features: jax.Array) -> jax.Array:
        """Inside a NumPyro model: sample the weights and return the logits, shape (N, C)
        (a ``ValueError`` for a student with a ``feature_extractor``: see :meth:`network`)."""
        return self.network(features.shape[1:])(features)

    def logits(self, weights: dict, features: jax.Array) -> jax.Array:
        """Logits for one set of weights (a dict of site name -> array), outside a model.

        This is the ``logits_fn`` to give the inference front-ends for a NumPyro model of your
        own (``logits_fn=student.logits``); :meth:`MTBKDModel.logits
        <mtbkd_jax.MTBKDModel.logits>` is the same function for the canonical model.

        Raises:
            ValueError: if a weight of the network is missing from ``weights`` (it would
                otherwise be drawn from the prior silently).
        """

        def lookup(msg: dict[str, Any]) -> jax.Array | None:
            if msg["type"] != "sample":  # a param: a dict prior's unsampled weights, if fitted
                return weights.get(msg["name"]) if msg["type"] == "param" else None
            if msg["name"] not in weights:
                raise ValueError(
                    f"weights has no entry for the student's site {msg['name']!r} "
                    f"(it has {sorted(weights)[:4]}...); was the posterior made with a student "
                    f"named {self.name!r}?"
                )
            return weights[msg["name"]]

        with handlers.block(), handlers.substitute(substitute_fn=lookup), _features_given():
            return self(features)

    @property
    def apply(self) -> Callable[[dict, jax.Array], jax.Array]:
        """Deprecated: :meth:`logits` (the name ``MTBKDModel.logits`` and ``logits_fn`` share);
        ``student.apply`` still gives it, with a ``DeprecationWarning``, for one release."""
        warn_renamed("mtbkd_jax.Student.apply", "mtbkd_jax.Student.logits")
        return self.logits

    def init_weights(self, rng_key: jax.Array, features: jax.Array) -> dict:
        """One draw of the weights from the base prior, as a dict of site name -> array."""
        with _features_given():
            trace = handlers.trace(handlers.seed(self, rng_key)).get_trace(features)
        return {k: v["value"] for k, v in trace.items() if v["type"] == "sample"}

    def featurize(self, inputs: ArrayLike, batch_size: int = 4096) -> jax.Array:
        """Apply the frozen feature extractor once (in batches); identity without one.

        Raises:
            ValueError: for an NNX extractor in training mode (a BatchNorm on batch
                statistics, a Dropout drawing masks), probed once per input shape and dtype,
                float inputs or integer ids alike: call ``.eval()`` on it first.
        """
        if self._featurize_jit is None:
            return jnp.asarray(inputs)
        inputs = np.asarray(inputs)
        extractor, shape = self.feature_extractor, (inputs.shape[1:], inputs.dtype.str)
        if isinstance(extractor, nnx.Module) and shape not in self._probed:  # once per shape
            as_given = not np.issubdtype(inputs.dtype, np.floating)  # integer ids as they are
            _layer_state.check_per_example(  # not in training mode (predict: by chunks)
                extractor, inputs, name="feature_extractor", as_given=as_given
            )
            self._probed.add(shape)
        parts = [
            self._featurize_jit(jnp.asarray(inputs[i : i + batch_size]))
            for i in range(0, inputs.shape[0], batch_size)
        ]
        return jax.lax.stop_gradient(jnp.concatenate(parts, axis=0))

    def __repr__(self) -> str:
        frozen = ", frozen feature extractor" if self.feature_extractor else ""
        shape = getattr(self.module, "architecture", "")  # e.g. an MLP's sizes and units
        kind = f"{type(self.module).__name__} {shape if isinstance(shape, str) else ''}".strip()
        return f"Student({kind}, name={self.name!r}{frozen})"
