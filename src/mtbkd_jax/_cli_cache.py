"""The ``mtbkd`` command's JAX compilation cache: on by default, in
``$XDG_CACHE_HOME/mtbkd_jax/jax-compilation-cache`` (``~/.cache/...``), so that a second run
compiles almost nothing; ``--no-compile-cache`` or ``MTBKD_COMPILE_CACHE=0`` turn it off."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from mtbkd_jax._paths import prepare_output_dir

__all__ = [
    "COMPILE_CACHE_ENV_VAR",
    "cache_folder",
    "cache_wanted",
    "compile_cache",
    "compile_cache_dir",
]

COMPILE_CACHE_ENV_VAR = "MTBKD_COMPILE_CACHE"
_OFF = ("0", "false", "no", "off")
_ON = ("", "1", "true", "yes", "on")
# the JAX options the cache sets for the duration of a command (restored afterwards)
_CACHE_OPTIONS = (
    "jax_enable_compilation_cache",
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


def compile_cache_dir() -> Path:
    """The folder of the CLI's JAX compilation cache: ``$XDG_CACHE_HOME/mtbkd_jax/
    jax-compilation-cache``, or ``~/.cache/mtbkd_jax/jax-compilation-cache`` when
    ``$XDG_CACHE_HOME`` is unset or not an absolute path (as the XDG specification says)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "mtbkd_jax" / "jax-compilation-cache"


def cache_wanted(no_compile_cache: bool) -> bool:
    """Whether the command should use the compilation cache (flag, then environment)."""
    if no_compile_cache:
        return False
    value = os.environ.get(COMPILE_CACHE_ENV_VAR, "").strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    raise ValueError(
        f"${COMPILE_CACHE_ENV_VAR} must be 0 (off) or 1 (on), "
        f"got {os.environ[COMPILE_CACHE_ENV_VAR]!r}"
    )


def cache_folder(wanted: bool) -> Path | None:
    """The cache folder to use, or ``None``; a folder that cannot be created is a warning."""
    if not wanted:
        return None
    try:
        return prepare_output_dir(compile_cache_dir(), "the compilation cache folder")
    except (OSError, ValueError, RuntimeError) as error:  # RuntimeError: no home directory
        print(
            "mtbkd: warning: running without the compilation cache: "
            + " ".join(str(error).split()),
            file=sys.stderr,
        )
        return None


@contextlib.contextmanager
def compile_cache(folder: Path | None) -> Iterator[None]:
    """Use JAX's persistent compilation cache in ``folder`` (``None``: no cache) for the
    duration of the ``with`` block, then restore JAX's previous settings.

    Every program is cached, however small or quick to compile (the demo compiles hundreds of
    small ones). Enter it before the first compilation that should be cached.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    before = {name: getattr(jax.config, name) for name in _CACHE_OPTIONS}
    if folder is None:
        settings: dict[str, object] = {"jax_enable_compilation_cache": False}
    else:
        settings = {
            "jax_enable_compilation_cache": True,
            "jax_compilation_cache_dir": str(folder),
            "jax_persistent_cache_min_compile_time_secs": 0.0,
            "jax_persistent_cache_min_entry_size_bytes": -1,
        }
    # JAX opens its cache once per process: reset it so that this folder is the one used
    compilation_cache.reset_cache()
    for name, value in settings.items():
        jax.config.update(name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()
