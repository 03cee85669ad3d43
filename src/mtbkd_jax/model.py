"""The canonical MT-BKD classification model.

    log p(theta | D) = sum_i log Cat(y_i | softmax(f_theta(x_i)))
                     + beta * sum_i log sum_m w_i^(m) Dir(q_i^T(theta); 1 + lambda p_i^(m))
                     + log p0(theta)

``MTBKDModel`` is a callable NumPyro model ``model(inputs, labels=None, ...)`` that users can
call, copy and compose; a model of one's own can call :func:`mtbkd_jax.teacher_prior_factor`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from mtbkd_jax._checks import require_concentration, require_positive
from mtbkd_jax._deprecation import renamed_keywords
from mtbkd_jax._model_hooks import InferenceHooks
from mtbkd_jax.priors import TeacherPrior, teacher_prior_factor
from mtbkd_jax.students import Student, _features_given
from mtbkd_jax.teachers import TeacherBank
from mtbkd_jax.trust.fit import TrustPosterior
from mtbkd_jax.trust.resolve import (
    DEFAULT_CONCENTRATION,
    check_prior_constants,
    check_trust_arguments,
    resolve_trust,
    sets_own_concentration,
    trust_description,
)
from mtbkd_jax.trust.sites import TrustedTeachers, TrustHyperprior, TrustValues, sample_trust
from mtbkd_jax.trust.weights import check_weight_options, teacher_log_weights, weight_rule_used

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike

__all__ = ["MTBKDModel", "PAPER_SETTINGS"]

# the reference code's settings (METHOD §5), beside its flat base prior
PAPER_SETTINGS: dict[str, Any] = {
    "concentration": 5.0,
    "temperature": 2.0,
    "prior_power": 0.02,
    "weight_rule": "paper",
}

# what the model is built from: fixed once it is (MTBKDModel.__setattr__)
_SETTINGS = frozenset(
    {"student", "teachers", "concentration", "temperature", "prior_power", "weight_rule",
     "weight_temperature", "weight_tau", "trust", "trust_hyperprior", "trusted_teachers",
     "teacher_prior"}
)  # fmt: skip


class MTBKDModel(InferenceHooks):
    """Likelihood + teacher-informed mixture prior + the student's base weight prior.

    Args:
        student: the :class:`Student` (its ``prior`` is the base weight prior).
        teachers: the :class:`TeacherBank` on the inputs where the prior is evaluated (the
            labelled inputs, or a transfer set passed as ``prior_inputs``); ``None`` gives the
            student alone.
        concentration: ``lambda >= 0``, the trust in the teachers (default 10).
        temperature: ``T > 0`` for the student's and teachers' tempered probabilities (default 1).
        prior_power: ``beta > 0``, a power on the teacher prior (default 0.1, so that the
            distillation weight ``beta * lambda`` of the posterior mode is 1; the reference code
            effectively uses ``beta = 0.02``; ``beta = 1`` is the plain Bayesian model).
        weight_rule: mixing-weight rule (``"paper"``, the default, ``"inverse_entropy"``,
            ``"softmax"``, ``"uniform"``) or an (M, N) array; with a ``TrustPosterior`` or
            ``"joint"``, by default the trust's hyperprior's rule (another is refused).
        weight_temperature: temperature at which entropies are measured for the weights (1;
            ``"uniform"`` and an array refuse another value, which they would ignore).
        weight_tau: temperature of the ``"softmax"`` weight rule (the others refuse a value
            other than 1).
        trust: the teachers' trust (:mod:`mtbkd_jax.trust`): ``None`` (the paper's fixed
            model); a :class:`~mtbkd_jax.trust.TrustPosterior` from
            :func:`~mtbkd_jax.trust.fit_teacher_trust` (the cut posterior: the student is
            conditioned on the trust learned from the labels, at its posterior median; the
            default); :class:`~mtbkd_jax.trust.TrustValues` (trust fixed by hand; the weights
            follow ``weight_rule``, which may be ``"learned"``); or ``"joint"`` (experimental:
            trust sampled with the student under ``trust_hyperprior``, informed by the labels
            only through the student; NUTS diverged on it: models/trust_cut_vs_joint.py).
            With a trust, ``concentration`` (but as ``"joint"``'s hyperprior median) and the
            weight options (but ``weight_rule`` with ``TrustValues``) are unused, and refused.
        trust_hyperprior: the hyperpriors of ``trust="joint"`` (default
            ``TrustHyperprior(concentration=concentration)``).

    The settings are fixed once the model is built (the teacher prior and compiled programs
    hold them): build a new model to change one.

    The weight arguments are :func:`~mtbkd_jax.teacher_weights`'s ``rule``, ``temperature`` and
    ``tau`` with a ``weight_`` prefix (``temperature`` is already ``T``; the former ``weights=``
    still works for one release, with a ``DeprecationWarning``).

    Example:
        >>> import numpy as np
        >>> from flax import nnx
        >>> from mtbkd_jax import MTBKDModel, Student, MLP, TeacherBank
        >>> teachers = TeacherBank.from_logits(np.random.default_rng(0).normal(size=(2, 8, 3)))
        >>> model = MTBKDModel(Student(MLP(4, 3, rngs=nnx.Rngs(0))), teachers)
        >>> model.distillation_weight
        1.0
    """

    @renamed_keywords("mtbkd_jax.MTBKDModel", weights="weight_rule")
    def __init__(
        self,
        student: Student,
        teachers: TeacherBank | None = None,
        *,
        concentration: float | None = None,
        temperature: float = 1.0,
        prior_power: float = 0.1,
        weight_rule: str | np.ndarray | jax.Array | None = None,
        weight_temperature: float = 1.0,
        weight_tau: float = 1.0,
        trust: TrustPosterior | TrustValues | str | None = None,
        trust_hyperprior: TrustHyperprior | None = None,
    ) -> None:
        if not isinstance(student, Student):
            raise TypeError(f"student must be a mtbkd_jax.Student, got {type(student).__name__}")
        if teachers is not None and not isinstance(teachers, TeacherBank):
            raise TypeError(
                f"teachers must be a TeacherBank or None, got {type(teachers).__name__}"
            )
        self.student = student
        self.teachers = teachers
        given = concentration  # None: the default (and, with a trust, nothing to refuse)
        concentration = DEFAULT_CONCENTRATION if given is None else given
        self.concentration = require_concentration(concentration)
        self.temperature = require_positive(temperature, "temperature")
        self.prior_power = require_positive(prior_power, "prior_power")
        rule_given = weight_rule is not None  # else the paper's rule, or the trust's own
        weight_rule = "paper" if weight_rule is None else weight_rule
        self.weight_rule = weight_rule if isinstance(weight_rule, str) else "array"
        self.weight_temperature = require_positive(weight_temperature, "weight_temperature")
        self.weight_tau = require_positive(weight_tau, "weight_tau")
        self.trust, self.trust_hyperprior = trust, trust_hyperprior
        # a trust with its own lambda leaves ``concentration`` unused: settings() record None
        self._uses_concentration = not sets_own_concentration(trust, trust_hyperprior)
        self.trusted_teachers: TrustedTeachers | None = None
        self.teacher_prior: TeacherPrior | None = None
        check_trust_arguments(trust, trust_hyperprior, teachers)
        if teachers is not None and trust is None:  # (no teachers: the student alone)
            self.teacher_prior = TeacherPrior.build(
                teachers,
                concentration=self.concentration,
                temperature=self.temperature,
                weight_rule=weight_rule,
                weight_temperature=weight_temperature,
                weight_tau=weight_tau,
            )
        elif teachers is not None:
            options = (self.weight_rule, self.weight_tau, self.weight_temperature)
            check_weight_options(trust, weight_rule, *options[1:])
            self.teacher_prior, self.trusted_teachers, self.trust_hyperprior = resolve_trust(
                trust,
                teachers,
                temperature=self.temperature,
                weight_rule=self.weight_rule,
                concentration=given,
                hyperprior=trust_hyperprior,
            )
            given_rule = self.weight_rule if rule_given else None
            self.weight_rule = weight_rule_used(
                trust, self.trust_hyperprior, given_rule, *options[1:]
            )
        self._built = True

    def __setattr__(self, name: str, value: Any) -> None:
        # the teacher prior and the run_* functions' compiled programs hold the values the
        # model was built with: a changed setting would be recorded by settings() only
        if name in _SETTINGS and getattr(self, "_built", False):
            raise AttributeError(
                f"MTBKDModel.{name} cannot change once the model is built (its teacher prior "
                "and the compiled programs of earlier runs hold the value it was built with): "
                f"build a new MTBKDModel with {name}=..."
            )
        object.__setattr__(self, name, value)

    @classmethod
    @renamed_keywords("mtbkd_jax.MTBKDModel.paper", weights="weight_rule")
    def paper(cls, student: Student, teachers: TeacherBank, **overrides: Any) -> MTBKDModel:
        """The reference code's model (METHOD §5) in one call.

        ``lambda = 5``, ``T = 2``, ``beta = 0.02`` (distillation weight 0.1), the ``paper`` weight
        rule (entropies at ``T_w = 1``, in bits) and a flat base prior on the student's weights
        (as the reference; the posterior is then improper along the softmax's shift direction,
        see :func:`~mtbkd_jax.flat_prior`). Any constructor argument can be overridden.

        Example:
            >>> import numpy as np
            >>> from flax import nnx
            >>> from mtbkd_jax import MTBKDModel, Student, MLP, TeacherBank
            >>> bank = TeacherBank.from_logits(np.random.default_rng(0).normal(size=(2, 8, 3)))
            >>> model = MTBKDModel.paper(Student(MLP(4, 3, rngs=nnx.Rngs(0))), bank)
            >>> model.concentration, model.temperature, model.prior_power
            (5.0, 2.0, 0.02)
        """
        from mtbkd_jax.priors import flat_prior

        if not isinstance(student, Student):
            raise TypeError(f"student must be a mtbkd_jax.Student, got {type(student).__name__}")
        settings = dict(PAPER_SETTINGS)
        if sets_own_concentration(overrides.get("trust"), overrides.get("trust_hyperprior")):
            del settings["concentration"]  # the trust's own lambda: the paper's is not used
        if overrides.get("trust") is not None and not isinstance(overrides["trust"], TrustValues):
            del settings["weight_rule"]  # a fitted or joint trust's hyperprior sets the rule
        settings.update(overrides)
        return cls(student.with_prior(flat_prior()), teachers, **settings)

    def differs_from_paper(self) -> list[str]:
        """The settings in which this model differs from :meth:`paper`'s (empty if none)."""
        differences = [
            f"{name}={getattr(self, name)!r} (paper: {value!r})"
            for name, value in {**PAPER_SETTINGS, "weight_temperature": 1.0}.items()
            if getattr(self, name) != value
            and (name != "concentration" or self._uses_concentration)
        ]
        base = getattr(self.student.prior, "description", {}).get("kind")
        if base != "flat":
            differences.append(f"base prior {base or 'custom'!s} (paper: flat)")
        if self.teachers is None:
            differences.append("no teachers (paper: a teacher bank)")
        if self.trust is not None:
            kind = trust_description(self.trust, self.trust_hyperprior)["kind"]
            differences.append(f"{kind} trust (paper: fixed)")
        return differences

    @property
    def distillation_weight(self) -> float | None:
        """``beta * lambda``: the weight of the KD term in the posterior mode's objective
        (``None`` with a ``trust``, whose ``lambda`` differs by teacher and class)."""
        fixed = self.prior_power * self.concentration if self.teachers is not None else 0.0
        return fixed if self.trust is None else None

    @property
    def teacher_weights(self) -> jax.Array | None:
        """The weights (M, N) by which the prior combines its teachers (a product's: its sum's)."""
        if self.teacher_prior is None or self.teachers is None:
            return None
        log_weights = teacher_log_weights(
            self.teacher_prior, self.trust, self.teachers, self.temperature, self.weight_rule
        )
        return jnp.exp(log_weights).T

    def settings(self) -> dict:
        """The distillation settings, as plain values (stored with every posterior)."""
        out = {
            "student": repr(self.student),
            "base_prior": str(
                getattr(self.student.prior, "description", type(self.student.prior).__name__)
            ),
            "has_teachers": self.teachers is not None,
        }
        if self.teachers is not None:
            out.update(
                concentration=self.concentration if self._uses_concentration else None,
                temperature=self.temperature,
                prior_power=self.prior_power,
                distillation_weight=self.distillation_weight,
                weight_rule=self.weight_rule,
                weight_temperature=self.weight_temperature,
                weight_tau=self.weight_tau,
                teacher_names=list(self.teachers.names),
                teacher_hash=self.teachers.content_hash,
            )
            if self.trust is not None:
                out["trust"] = trust_description(self.trust, self.trust_hyperprior)
        return out

    def logits(self, weights: dict, features: jax.Array) -> jax.Array:
        """:meth:`Student.logits` on features: the front-ends' default ``logits_fn``."""
        with _features_given():
            return self.student.logits(weights, features)

    def network(self, feature_shape: tuple[int, ...]) -> Callable[[jax.Array], jax.Array]:
        """Inside the model: :meth:`Student.network` on features (the front-ends featurized
        the inputs), for a subclass's own ``__call__`` too."""
        with _features_given():
            return self.student.network(feature_shape)

    def featurize(self, inputs: ArrayLike) -> jax.Array:
        """The student's frozen feature extractor applied once (identity without one)."""
        return self.student.featurize(inputs)

    def __call__(
        self,
        inputs: jax.Array,
        labels: jax.Array | None = None,
        *,
        prior_inputs: jax.Array | None = None,
        subsample_size: int | None = None,
        prior_subsample_size: int | None = None,
        teacher_prior: bool = True,
        prior_constants: TeacherPrior | TrustedTeachers | None = None,
    ) -> jax.Array:
        """The NumPyro model.

        Args:
            inputs: the student's (featurized) labelled inputs, shape (N, ...).
            labels: class labels (N,), or ``None`` to sample them (prior/posterior predictive).
            prior_inputs: inputs of a separate transfer set on which the teacher prior is
                evaluated instead of ``inputs`` (the teacher bank must describe them).
            subsample_size: minibatch size of the data plate (the samplers set it from their
                ``batch_size`` and refuse another); prior_subsample_size: the transfer plate's.
            teacher_prior: include the teacher prior; pass ``False`` to run the model on new
                inputs the teacher bank does not describe (e.g. ``numpyro.infer.Predictive``
                on test data).
            prior_constants: the teacher prior's constants (default: the model's own
                ``teacher_prior``). The samplers pass them here so that ``jit`` treats them as
                data instead of compiling them into the program as constants.

        Returns:
            The student's logits on the (sub)sampled labelled inputs.
        """
        joint = self.trusted_teachers is not None
        use_prior = teacher_prior and (self.teacher_prior is not None or joint)
        constants = prior_constants
        if constants is None:
            constants = self.trusted_teachers if joint else self.teacher_prior
        trust = None
        if use_prior and joint:
            assert self.teachers is not None and self.trust_hyperprior is not None
            trust = sample_trust(
                self.trust_hyperprior, self.teachers.num_teachers, self.teachers.num_classes
            )
        network = self.network(inputs.shape[1:])
        num_examples = inputs.shape[0]
        data_plate = numpyro.plate("data", num_examples, subsample_size=subsample_size)
        with data_plate as index:
            batch = inputs if subsample_size is None else jnp.take(inputs, index, axis=0)
        transfer = use_prior and prior_inputs is not None
        if transfer:
            # transfer implies use_prior (so constants are set) and prior_inputs
            assert prior_inputs is not None and constants is not None
            num_transfer = prior_inputs.shape[0]
            check_prior_constants(constants, num_transfer, "prior_inputs")
            transfer_plate = numpyro.plate(
                "transfer", num_transfer, subsample_size=prior_subsample_size
            )
            with transfer_plate as t:
                whole = prior_subsample_size is None
                transfer_batch = prior_inputs if whole else jnp.take(prior_inputs, t, axis=0)
            # one pass of the network over both batches (the weights are the same draw): for a
            # small student the number of ops, not their size, sets the time per step
            both = network(jnp.concatenate([batch, transfer_batch], axis=0))
            logits, transfer_logits = both[: batch.shape[0]], both[batch.shape[0] :]
        else:
            logits = network(batch)
        with data_plate:
            batch_labels = None
            if labels is not None:
                batch_labels = labels if subsample_size is None else jnp.take(labels, index)
            numpyro.sample("y", dist.Categorical(logits=logits), obs=batch_labels)
            if use_prior and prior_inputs is None:
                assert constants is not None  # use_prior implies a teacher prior
                check_prior_constants(constants, num_examples, "inputs")
                prior = constants if subsample_size is None else constants.take(index)
                teacher_prior_factor(
                    "teacher_prior",
                    logits,
                    self._resolve(prior, trust),
                    prior_power=self.prior_power,
                )
        if transfer:
            assert constants is not None  # checked above
            with transfer_plate:
                prior = constants if prior_subsample_size is None else constants.take(t)
                teacher_prior_factor(
                    "teacher_prior",
                    transfer_logits,
                    self._resolve(prior, trust),
                    prior_power=self.prior_power,
                )
        return logits

    def _resolve(
        self, prior: TeacherPrior | TrustedTeachers, trust: TrustValues | None
    ) -> TeacherPrior:
        """The batch's prior constants: as given, or under the sampled trust (joint)."""
        if isinstance(prior, TeacherPrior):
            return prior
        assert trust is not None and self.trust_hyperprior is not None
        h = self.trust_hyperprior
        return prior.prior(trust, self.temperature, h.weight_rule, h.pooling)
