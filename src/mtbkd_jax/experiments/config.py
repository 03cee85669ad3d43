"""The settings of one run of the experiment runner (:func:`mtbkd_jax.experiments.run_baselines`).

Every experiment, the demo included, is a subclass of :class:`ExperimentConfig` whose defaults
are its full run and whose :meth:`ExperimentConfig.smoke` is its tiny run for tests (the
``--smoke`` of ``mtbkd``).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import TYPE_CHECKING, Any, Self

from mtbkd_jax._checks import require_positive
from mtbkd_jax.experiments._config_checks import check_fields
from mtbkd_jax.trust.sites import TRUST_CALIBRATIONS, TRUST_POOLINGS

if TYPE_CHECKING:
    from jax.sharding import Mesh

__all__ = ["ExperimentConfig", "SMOKE_TUNING", "KEY_SCHEDULES", "CHAIN_STARTS", "BAYES_SGMCMC"]

# a two-point search for smoke runs and tests: exercises the tuning path in seconds
SMOKE_TUNING: dict[str, Any] = {
    "tune": True,
    "prior_scale_grid": (0.3, 1.0),
    "concentration_grid": (10.0,),
    "prior_power_grid": (0.1,),
    "grid_extensions": 0,
    "trust_calibration_grid": ("teacher",),
    "trust_pooling_grid": ("mixture",),
}
# how each method's random keys come from the seed (see ExperimentConfig)
KEY_SCHEDULES = ("per-method", "maps-first")
# where the chains of a posterior start (see ExperimentConfig)
CHAIN_STARTS = ("map", "maps")
# the minibatch samplers a run's posterior may take instead of NUTS (``bayes``); those of
# run_sgmcmc whose step size "auto" chooses and that take no sampler_options here
BAYES_SGMCMC = ("sgld", "psgld", "ncsgld")
# the coordinates SG-MCMC moves a learned-scale prior's weights in (see ExperimentConfig)
SGMCMC_COORDINATES = ("centred", "noncentred")
# the student MLP's hidden units (see ExperimentConfig)
ACTIVATIONS = ("tanh", "relu")
# where the learned-trust rows learn their trust: the training labels or the validation split's
TRUST_LABELS = ("train", "validation")


@dataclass(frozen=True)
class ExperimentConfig:
    """Methods, hyperparameters, student and inference budget of a run.

    The student is an MLP with ``hidden`` units of ``activation`` (``"tanh"``, whose logits
    saturate away from the data, or ``"relu"``, whose logits grow linearly there) initialised
    from ``seed``. ``methods``
    names the plan of :data:`mtbkd_jax.experiments.methods.METHOD_PLANS` (``"baselines"``:
    every baseline of METHOD §7; ``"demo"``: the demo's six; ``"kd"``: the KD baselines
    against MT-BKD; ``"trust"``: the learned-trust row alone); ``teacher_rows`` adds each
    teacher's own row.

    Every MAP runs ``map_steps`` Adam steps at ``learning_rate``, then up to
    ``map_polish_steps`` L-BFGS iterations to the mode (``run_map(polish_steps=)``; 0, the
    default of every published table, polishes nothing).

    With ``tune=True`` every method chooses its base prior scale (and, with teachers, its
    ``lambda`` and ``beta``) from the grids by the validation NLL of its MAP
    (:func:`mtbkd_jax.tuning.coordinate_search`, starting from ``prior_scale``,
    ``concentration``, ``prior_power``); the posterior is then sampled once with the chosen
    values. A best value on a grid's edge extends that grid (up to ``grid_extensions`` values
    per end, each kept only if it lowers the validation NLL by more than
    ``grid_min_improvement``), and the row's settings say so. With ``posterior_tuning`` too,
    each Bayesian row (but learned trust's) chooses its ``sigma0`` again, from the same grid,
    by its *posterior predictive's* validation NLL, each value sampled in full
    (:mod:`mtbkd_jax.experiments.posterior_tuning`); the MAP row keeps the MAP's. The
    learned-trust rows (:mod:`mtbkd_jax.experiments.trusted`) learn their trust (NUTS,
    ``trust_warmup`` + ``trust_draws`` per chain) and their prior scales, and choose ``beta`` from
    ``trust_prior_power_grid`` by their *posterior's* validation NLL (each value sampled with
    ``trust_search_budget`` of the row's sampling budget, the winner then at the full budget
    when that fraction is below 1); their trust's ``calibration`` (see
    :class:`mtbkd_jax.trust.TrustHyperprior`) is chosen the same way from
    ``trust_calibration_grid``, the search starting at ``trust_calibration`` (the value used
    without ``tune``), in up to ``trust_search_sweeps`` passes over the two (each pass at
    the other's best so far; a pass that changes nothing ends the search: the calibration
    interacts with ``beta``); and so, with such a search for each, is how the teachers'
    Dirichlets combine (``pooling``, the paper's mixture or one product) from
    ``trust_pooling_grid``, starting at ``trust_pooling`` (each pooling judged at its own
    best ``beta``: the product's is unlike the mixture's); by SGLD, their step size
    is ``trust_sgld_step_size`` (``"auto"``: chosen by pilot runs, see
    :func:`mtbkd_jax.infer.choose_step_size`). Their trust is learned from the training labels
    (``trust_labels="train"``) or from the validation split's (``"validation"``; the problem
    must carry the teachers on it, ``DistillationData.teachers_validation``): the choice when
    the teachers were trained on the student's labelled inputs, where they look more reliable
    than on new ones. The validation labels then also choose the row's settings: one split
    does both, as it does for every other row's settings. Their base prior learns a scale per
    weight array (``trust_prior_scale=None``) or, with a number ``sigma0``, is
    ``Normal(0, sigma0^2)`` on every weight, as the other rows' (not searched).

    ``bayes`` is ``"nuts"`` or one of :data:`BAYES_SGMCMC`, a minibatch sampler of
    :func:`mtbkd_jax.infer.run_sgmcmc`: ``"sgld"`` (the paper's), ``"psgld"`` (RMSprop
    preconditioned) or ``"ncsgld"`` (corrected for the minibatch gradient's noise; an even
    ``sgld_batch_size`` and no ``mesh``). Each runs ``sgld_burnin_epochs`` epochs whose draws
    are dropped, then ``sgld_epochs`` epochs that keep ``sgld_draws_per_epoch`` draws each,
    in minibatches of ``sgld_batch_size`` (the ``sgld_`` settings are every such sampler's).
    ``sgmcmc_coordinates="noncentred"`` runs it on the model with its learned scales non-centred
    (:mod:`mtbkd_jax.noncentred`; the learned-trust rows', a no-op for a fixed-scale prior),
    each chain started at its MAP in those coordinates, the draws reported as weights.

    Random keys: ``key_schedule="per-method"`` splits the seed's key into (next, MAP,
    posterior) keys for each method in turn; ``"maps-first"`` (the demo's, kept so that its
    published figures reproduce) draws every method's MAP key first, then for each posterior
    skips one key, draws one key per extra chain start and then the sampler's key. Chains
    start at the method's MAP (``chain_starts="map"``), or chain 0 there and every other chain
    at a MAP fitted from another random start (``"maps"``, so that R-hat compares chains that
    began apart).

    ``mesh`` (a :class:`jax.sharding.Mesh` with axes ``("chains", "data")``, e.g. one over
    the devices of several processes, :mod:`mtbkd_jax.infer.multiprocess`) is where every
    student fit runs: the MAPs by ``run_map(mesh=)``, NUTS by ``run_nuts(mesh=)`` and SGLD by
    ``run_sgmcmc(mesh=, shard_data=True)`` (each device evaluates the potential on its shard
    of the data; SGLD's minibatches are then stratified over the shards, so its draws are
    those of a run with as many data shards, not those without a mesh). ``None``: one
    process's devices, as without a mesh. The teachers' trust (a small model of the labels)
    is fitted in every process alike, without the mesh.
    """

    seed: int = 0
    methods: str = "baselines"
    teacher_rows: bool = True
    hidden: tuple[int, ...] = (16,)
    activation: str = "tanh"
    prior_scale: float = 1.0
    tune: bool = False
    posterior_tuning: bool = False
    prior_scale_grid: tuple = (0.1, 0.2, 0.3, 0.5, 1.0)
    concentration_grid: tuple = (3.0, 10.0, 30.0)
    prior_power_grid: tuple = (0.03, 0.1, 0.3)
    grid_extensions: int = 3
    grid_min_improvement: float = 0.002
    trust_prior_power_grid: tuple = (0.1, 0.3, 1.0)
    trust_warmup: int = 300
    trust_draws: int = 300
    trust_sgld_step_size: float | str = "auto"
    trust_search_budget: float = 1.0
    trust_calibration: str = "teacher"
    trust_calibration_grid: tuple = ("teacher", "none")
    trust_pooling: str = "mixture"
    trust_pooling_grid: tuple = ("mixture", "product")
    trust_search_sweeps: int = 3
    trust_labels: str = "train"
    trust_prior_scale: float | None = None
    concentration: float = 10.0
    prior_power: float = 0.1
    temperature: float = 1.0
    map_steps: int = 2000
    learning_rate: float = 1e-2
    map_polish_steps: int = 0
    bayes: str = "nuts"  # or one of BAYES_SGMCMC
    num_warmup: int = 300
    num_draws: int = 300
    num_chains: int = 2
    sgld_batch_size: int = 64
    sgld_epochs: int = 80
    sgld_step_size: float | str = 1e-5
    sgld_burnin_epochs: int = 0
    sgld_draws_per_epoch: int = 6
    sgmcmc_coordinates: str = "centred"
    key_schedule: str = "per-method"
    chain_starts: str = "map"
    progress_bar: bool = False
    mesh: Mesh | None = None

    def __post_init__(self) -> None:
        from mtbkd_jax.experiments.methods import METHOD_PLANS

        check_fields(self)

        for name, allowed in (
            ("methods", tuple(METHOD_PLANS)),
            ("bayes", ("nuts", *BAYES_SGMCMC)),
            ("activation", ACTIVATIONS),
            ("sgmcmc_coordinates", SGMCMC_COORDINATES),
            ("key_schedule", KEY_SCHEDULES),
            ("chain_starts", CHAIN_STARTS),
            ("trust_calibration", TRUST_CALIBRATIONS),
            ("trust_pooling", TRUST_POOLINGS),
            ("trust_labels", TRUST_LABELS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name, allowed in (
            ("trust_calibration_grid", TRUST_CALIBRATIONS),
            ("trust_pooling_grid", TRUST_POOLINGS),
        ):
            grid = getattr(self, name)
            if not (isinstance(grid, tuple) and grid and all(c in allowed for c in grid)):
                raise ValueError(f"{name} must be a non-empty tuple of {allowed}, got {grid!r}")
        for name in ("sgld_burnin_epochs", "map_polish_steps"):
            count = getattr(self, name)
            if isinstance(count, bool) or not (isinstance(count, Integral) and int(count) >= 0):
                raise ValueError(f"{name} must be an integer >= 0, got {count!r}")
        if self.map_polish_steps and self.mesh is not None:
            raise ValueError("map_polish_steps polishes on one device: it cannot take a mesh")
        if self.sgmcmc_coordinates != "centred" and self.bayes == "nuts":
            raise ValueError(
                f"sgmcmc_coordinates={self.sgmcmc_coordinates!r} applies to the SG-MCMC "
                f"samplers {BAYES_SGMCMC}; NUTS samples the centred model (bayes='nuts')"
            )
        if self.bayes == "ncsgld" and self.mesh is not None:
            raise ValueError(
                "bayes='ncsgld' needs the one-process data path; with a mesh choose another "
                f"of {BAYES_SGMCMC} (ncsgld cannot shard its half batches over 'data')"
            )
        if self.bayes == "ncsgld" and self.sgld_batch_size % 2:
            raise ValueError(
                "sgld_batch_size must be even with bayes='ncsgld' (it halves each minibatch), "
                f"got {self.sgld_batch_size!r}"
            )
        if self.mesh is not None:  # its type and axes, before any compute
            from mtbkd_jax.infer.mesh import check_mesh

            check_mesh(self.mesh)
        if isinstance(self.trust_search_sweeps, bool) or not (
            isinstance(self.trust_search_sweeps, Integral) and self.trust_search_sweeps >= 1
        ):
            raise ValueError(
                f"trust_search_sweeps must be an integer >= 1, got {self.trust_search_sweeps!r}"
            )
        if self.trust_prior_scale is not None:
            if isinstance(self.trust_prior_scale, bool):
                raise TypeError(
                    f"trust_prior_scale must be a number, got {self.trust_prior_scale!r}"
                )
            require_positive(self.trust_prior_scale, "trust_prior_scale")
        if self.posterior_tuning and not self.tune:  # the runner would silently skip it
            raise ValueError(
                "posterior_tuning=True chooses sigma0 again after the MAP search and needs "
                "tune=True; pass tune=True, or posterior_tuning=False"
            )

    @classmethod
    def smoke(cls, seed: int = 0) -> Self:
        """The tiny run for tests: 100 MAP steps, one chain of 10 draws (or 2 SGLD epochs),
        a two-point search over the prior scale."""
        return cls(
            seed=seed,
            map_steps=100,
            num_warmup=10,
            num_draws=10,
            num_chains=1,
            sgld_epochs=2,
            sgld_draws_per_epoch=2,
            trust_warmup=20,
            trust_draws=20,
            trust_prior_power_grid=(0.3,),
            **SMOKE_TUNING,
        )

    @classmethod
    def for_run(cls, *, smoke: bool = False, seed: int = 0) -> Self:
        """``cls.smoke(seed)`` with ``smoke``, else the full run ``cls(seed=seed)``."""
        return cls.smoke(seed) if smoke else cls(seed=seed)
