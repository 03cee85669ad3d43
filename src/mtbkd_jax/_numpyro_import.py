"""NumPyro imported whole, even after ArviZ registered it as a lazy module.

``arviz_base`` registers ``numpyro`` in ``sys.modules`` as an ``importlib`` lazy module. When
the first real import is then ``import numpyro.distributions`` (as it is in this package), the
submodules of ``numpyro.distributions`` load but are not bound as attributes of their package,
and NumPyro's own ``numpyro.factor`` fails with "module 'numpyro.distributions' has no attribute
'distribution'". ``import arviz`` before ``import mtbkd_jax``, the usual order in a notebook,
was enough to break every model with a teacher prior. :func:`bind_numpyro_submodules` loads
NumPyro and binds every loaded submodule to its package (the modules themselves are the ones in
``sys.modules``: nothing is loaded twice); importing this module runs it, and the package
imports this module first.
"""

from __future__ import annotations

import sys


def bind_numpyro_submodules() -> None:
    """Load ``numpyro`` (and the submodules this package uses) and set every loaded
    ``numpyro.*`` module as an attribute of its parent package where it is missing."""
    import numpyro
    import numpyro.distributions
    import numpyro.infer  # noqa: F401  # loaded so that its submodules are bound below

    for name, module in list(sys.modules.items()):
        if not name.startswith("numpyro.") or module is None:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = sys.modules.get(parent_name)
        if parent is not None and getattr(parent, child, None) is not module:
            setattr(parent, child, module)
    assert numpyro.distributions.distribution is sys.modules["numpyro.distributions.distribution"]


bind_numpyro_submodules()
