"""How the inference front-ends use the canonical model (:class:`~mtbkd_jax.MTBKDModel`
inherits these): its minibatch plan, the constants passed as data, the plates of its
per-example arguments, and the arguments for its likelihood alone. The front-ends look them
up by name, so a model of one's own may define them too."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mtbkd_jax.priors import TeacherPrior
    from mtbkd_jax.teachers import TeacherBank
    from mtbkd_jax.trust.sites import TrustedTeachers

__all__ = ["InferenceHooks"]


class InferenceHooks:
    """The methods the front-ends call on the canonical model (see the module docstring)."""

    teachers: TeacherBank | None
    teacher_prior: TeacherPrior | None
    trusted_teachers: TrustedTeachers | None

    def minibatch_kwargs(
        self,
        num_examples: int,
        batch_size: int,
        num_transfer: int | None = None,
        prior_batch_size: int | None = None,
    ) -> dict:
        """The keyword arguments that make the model subsample its plates (its minibatch plan).

        The data plate takes ``batch_size`` of ``num_examples``; a transfer plate (when the
        prior sits on ``prior_inputs`` of ``num_transfer`` inputs) takes ``prior_batch_size``,
        by default in proportion, so that both plates finish an epoch together.
        """
        out = {"subsample_size": min(int(batch_size), int(num_examples))}
        if num_transfer is not None and self.teachers is not None:
            if prior_batch_size is None:
                prior_batch_size = -(-out["subsample_size"] * int(num_transfer) // num_examples)
            out["prior_subsample_size"] = min(int(prior_batch_size), int(num_transfer))
        return out

    def constant_kwargs(self) -> dict:
        """Array constants the samplers pass to the model as data (so ``jit`` does not compile
        them into the program): the teacher prior's (N, M, C) constants."""
        if self.trusted_teachers is not None:
            return {"prior_constants": self.trusted_teachers}
        return {} if self.teacher_prior is None else {"prior_constants": self.teacher_prior}

    def row_plates(self, model_kwargs: dict) -> dict:
        """Which plate's minibatches index each per-example keyword argument (a streamed run,
        :mod:`mtbkd_jax.infer.streaming`, gathers their rows on the host): the inputs and
        labels the data plate's; ``prior_inputs`` the transfer plate's; the teacher prior's
        constants the transfer plate's when there is a transfer set, else the data plate's."""
        transfer = model_kwargs.get("prior_inputs") is not None
        return {
            "inputs": "data",
            "labels": "data",
            "prior_inputs": "transfer",
            "prior_constants": "transfer" if transfer else "data",
        }

    def observation_kwargs(self) -> dict:
        """Keyword arguments for the likelihood alone (the teacher prior left out)."""
        return {"teacher_prior": False}
