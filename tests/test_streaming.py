"""Streaming (issue 13, part 3): data on the host, each chunk's minibatch rows gathered there and
streamed to the device. The draws equal the device-resident run's bit for bit, for chunks of
any length (inside an epoch, across epochs), on the canonical model and on a user's own; a
checkpoint written inside an epoch resumes exactly; the device never holds the N rows."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from flax import nnx

import mtbkd_jax as mk
from mtbkd_jax.infer import _stream_driver
from mtbkd_jax.infer import checkpoint as checkpoint_module
from mtbkd_jax.infer._host_rows import HostRows, _byte_range, release_pages
from mtbkd_jax.infer.gradients import gradient_estimator
from mtbkd_jax.infer.streaming import SPREAD_BATCHES, streamed_data

N, BATCH = 200, 20  # 10 steps per epoch


def _problem(n=N, seed=0, teachers=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x[:, 0] - 0.5 * x[:, 1] + 0.3 * rng.normal(size=n) > 0).astype(np.int32)
    if not teachers:
        return x, y, None
    zeros = np.zeros(n)
    logits = np.stack([np.stack([zeros, 2 * x[:, 0]], -1), np.stack([zeros, x[:, 1]], -1)])
    return x, y, mk.TeacherBank.from_logits(logits)


def _canonical(teachers):
    return mk.MTBKDModel(mk.Student(mk.MLP(3, 2, hidden=(4,), rngs=nnx.Rngs(0))), teachers)


def _run(model, x, y, **kwargs):
    settings = dict(
        batch_size=BATCH, num_epochs=3, num_burnin_epochs=1, step_size=1e-3, draws_per_epoch=3,
        num_chains=2, progress_bar=False,
    )  # fmt: skip
    settings.update(kwargs)
    return mk.run_sgmcmc(jax.random.key(5), model, x, y, **settings)


def _assert_same_draws(a, b, exact=True):
    """Bit for bit (the canonical model), or to float32 rounding: a user's model indexes the
    streamed rows with the indices 0 .. |B| - 1, which XLA may fuse into the next operation
    otherwise than a gather of permuted rows (differences of ~1e-6 relative seen)."""
    assert set(a.draws) == set(b.draws)
    for name in a.draws:
        assert a.draws[name].shape == b.draws[name].shape
        if exact:
            np.testing.assert_array_equal(a.draws[name], b.draws[name])
        else:
            np.testing.assert_allclose(a.draws[name], b.draws[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.sample_stats["step_size"], b.sample_stats["step_size"])


@pytest.fixture(scope="module")
def canonical():
    x, y, teachers = _problem()
    model = _canonical(teachers)
    return model, x, y, _run(model, x, y)


@pytest.mark.parametrize("chunk_steps", [None, 7, 10, 25])
def test_streamed_draws_equal_the_device_resident_ones(canonical, chunk_steps):
    """Chunks of one epoch (the default), inside epochs (7 of 10 steps: every chunk but a few
    ends mid-epoch, some hold no kept step), of exactly an epoch, and across epochs."""
    model, x, y, resident = canonical
    streamed = _run(model, x, y, stream=True, chunk_steps=chunk_steps)
    _assert_same_draws(resident, streamed)
    assert streamed.draws["student.layers.0.kernel"].shape[:2] == (2, 9)  # 3 epochs x 3
    steps = sum(e for e, _ in streamed.settings["chunk_seconds"]) * 10
    assert np.isclose(steps, 40)  # burn-in and sampling: 4 epochs of 10 steps


def test_a_transfer_set_streams_by_its_own_plate():
    """Two subsampled plates: the labelled data and a transfer set of another size with the
    teacher prior on it; the teacher prior's constants follow the transfer plate."""
    x, y, _ = _problem()
    transfer, _, teachers = _problem(n=120, seed=1)
    model = _canonical(teachers)
    kwargs = dict(model_kwargs={"prior_inputs": transfer}, sampler="sghmc", num_epochs=2)
    resident = _run(model, x, y, **kwargs)
    assert [p[0] for p in resident.settings["plates"]] == ["data", "transfer"]
    _assert_same_draws(resident, _run(model, x, y, stream=True, chunk_steps=6, **kwargs))


def _users_model(declared_size):
    """A user's logistic regression with a subsampled plate, declared from the data's length
    (None) or by number."""

    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        size = x.shape[0] if declared_size is None else declared_size
        with numpyro.plate("data", size, subsample_size=BATCH) as idx:
            numpyro.sample("y", dist.Bernoulli(logits=x[idx] @ w + b), obs=y[idx])

    return model


@pytest.mark.parametrize("declared_size", [None, N])
def test_a_users_model_streams_with_the_same_draws(declared_size):
    x, y, _ = _problem(teachers=False)
    model = _users_model(declared_size)
    resident = _run(model, x, y)
    _assert_same_draws(resident, _run(model, x, y, stream=True, chunk_steps=4), exact=False)


@pytest.mark.parametrize("declared_size", [None, N])
def test_a_model_that_subsamples_with_numpyro_subsample_streams(declared_size):
    """``numpyro.subsample(x, event_dim=...)`` instead of ``x[idx]``, under a plate declared
    from the data or with N by number: the streamed rows are already the minibatch, and the
    draws are the device-resident run's."""

    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
        size = x.shape[0] if declared_size is None else declared_size
        with numpyro.plate("data", size, subsample_size=BATCH):
            rows, labels = numpyro.subsample(x, event_dim=1), numpyro.subsample(y, event_dim=0)
            numpyro.sample("y", dist.Bernoulli(logits=rows @ w), obs=labels)

    x, y, _ = _problem(teachers=False)
    resident = _run(model, x, y)
    _assert_same_draws(resident, _run(model, x, y, stream=True, chunk_steps=7), exact=False)


def _model_with_a_param(per_example: bool):
    """A user's model with a constant ``numpyro.param``: per example (N rows, ``event_dim=0``,
    under the plate) or one global offset."""

    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
        offset = numpyro.param("global_offset", jnp.asarray(0.1))
        with numpyro.plate("data", N, subsample_size=BATCH) as idx:
            logits = x[idx] @ w + offset if not per_example else x[idx] @ w
            if per_example:
                logits = logits + numpyro.param("offsets", jnp.linspace(-1, 1, N), event_dim=0)
            numpyro.sample("y", dist.Bernoulli(logits=logits), obs=y[idx])

    return model


def test_a_per_example_param_under_a_streamed_plate_is_refused():
    """The plate would take rows 0 .. |B| - 1 of a param's N rows, not the minibatch's: a
    silently wrong potential. Streaming refuses it by name; the device-resident run (which
    indexes it with the minibatch's indices) and a global param are fine."""
    x, y, _ = _problem(teachers=False)
    model = _model_with_a_param(per_example=True)
    with pytest.raises(ValueError, match=r"numpyro.param\('offsets', ..., event_dim=0\)"):
        _run(model, x, y, stream=True, num_epochs=1, num_burnin_epochs=0)
    assert np.isfinite(_run(model, x, y, num_epochs=1, num_burnin_epochs=0).draws["w"]).all()
    model = _model_with_a_param(per_example=False)
    resident = _run(model, x, y)
    _assert_same_draws(resident, _run(model, x, y, stream=True, chunk_steps=7), exact=False)


def test_a_subsample_of_an_array_the_stream_does_not_gather_is_refused():
    """``numpyro.subsample`` of a per-example array the model closes over (all N rows, not
    streamed) under a streamed plate: refused by name, not given rows 0 .. |B| - 1."""
    x, y, _ = _problem(teachers=False)
    offsets = jnp.linspace(-1.0, 1.0, N)

    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
        with numpyro.plate("data", N, subsample_size=BATCH):
            rows, labels = numpyro.subsample(x, event_dim=1), numpyro.subsample(y, event_dim=0)
            shift = numpyro.subsample(offsets, event_dim=0)
            numpyro.sample("y", dist.Bernoulli(logits=rows @ w + shift), obs=labels)

    with pytest.raises(ValueError, match=r"numpyro.subsample\(..., event_dim=0\) got all 200"):
        _run(model, x, y, stream=True, num_epochs=1, num_burnin_epochs=0)


def _model_with_offsets(closed_over):
    """A logistic regression with a known offset per example, closed over and indexed by the
    plate's indices (wrong under stream=True: rows 0 .. |B| - 1 at every step), or passed as
    a keyword argument (streamed with the rows)."""
    fixed = np.linspace(-3.0, 3.0, N).astype(np.float32)

    def model(x, y=None, offsets=None):
        offsets = jnp.asarray(fixed) if closed_over else offsets
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
        with numpyro.plate("data", N, subsample_size=BATCH) as idx:
            numpyro.sample("y", dist.Bernoulli(logits=x[idx] @ w + offsets[idx]), obs=y[idx])

    return model, fixed


def test_a_per_example_array_the_model_closes_over_is_refused_when_streamed():
    """No handler sees a closed-over array indexed by hand, but its effect shows: the site's
    terms change when the first minibatch's rows are reordered together. Refused, naming the
    site; passed as a keyword argument, it streams with the draws of the device-resident run
    (which indexes the closed-over array right and accepts it). A deliberately wrong check
    that compared the total log density only would miss a likelihood change hidden under a
    large prior; the check compares each site's terms."""
    x, y, _ = _problem(teachers=False)
    model, offsets = _model_with_offsets(closed_over=True)
    short = dict(num_epochs=1, num_burnin_epochs=0)
    with pytest.raises(ValueError, match=r"site\(s\) 'y' changed when the rows.*model_kwargs"):
        _run(model, x, y, stream=True, **short)
    resident = _run(model, x, y)
    as_argument, _ = _model_with_offsets(closed_over=False)
    streamed = _run(as_argument, x, y, stream=True, model_kwargs={"offsets": offsets})
    _assert_same_draws(resident, streamed, exact=False)


def test_the_pairing_check_sees_one_wrong_term_under_a_large_prior():
    """A closed-over array that moves one example's term by a little, under a prior on 20,000
    weights whose log density dwarfs it: the per-site comparison still refuses it."""
    from mtbkd_jax.infer import _stream_pairing

    x, y, _ = _problem(teachers=False)
    nudge = np.zeros(N, np.float32)
    nudge[0] = 0.1

    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
        numpyro.sample("big", dist.Normal(0.0, 1.0).expand([20_000]).to_event(1))
        with numpyro.plate("data", N, subsample_size=BATCH) as idx:
            logits = x[idx] @ w + jnp.asarray(nudge)[idx]
            numpyro.sample("y", dist.Bernoulli(logits=logits), obs=y[idx])

    with pytest.raises(ValueError, match="'y' changed"):
        _run(model, x, y, stream=True, num_epochs=1, num_burnin_epochs=0)
    # the total log density moves by less than 1e-4 of itself: a check of the total would
    # have to tell that from rounding
    *_, estimator = streamed_data(model, x, y, None, None, None)
    point = {"w": jnp.ones(3), "big": jnp.full(20_000, 1.5)}
    shifted = {"data": np.roll(np.arange(BATCH), 1)}
    moved = tuple(jnp.asarray(r) for r in estimator.rows.take(shifted))
    first, other = (float(estimator.logdensity(point, rows)) for rows in (estimator.first, moved))
    assert 0 < abs(first - other) < 1e-4 * abs(first)
    assert not _stream_pairing._differs(np.arange(5.0), np.arange(5.0)[::-1])
    assert _stream_pairing._differs(np.array([1.0, 2.0]), np.array([1.0, 2.001]))


@pytest.mark.parametrize("declared_size", [None, N])
def test_the_streamed_log_density_is_scaled_by_n_over_the_batch(declared_size):
    """On the same rows the streamed estimator's log density and gradient are the resident
    one's: the likelihood scaled by N / |B| (not 1, not N / |B| twice), the prior once."""
    x, y, _ = _problem()
    model = _users_model(declared_size)
    resident = gradient_estimator(model, (jnp.asarray(x), jnp.asarray(y)))
    _, _, _, rows, streamed = streamed_data(model, x, y, None, None, None)
    indices = np.random.default_rng(3).permutation(N)[:BATCH]
    batch = rows.take({"data": indices})
    position = {"w": jnp.array([0.3, -0.2, 0.1]), "b": jnp.array(0.4)}
    expected = resident.logdensity(position, {"data": jnp.asarray(indices)})
    np.testing.assert_allclose(streamed.logdensity(position, batch), expected, rtol=1e-6)
    grads = streamed(position, batch), resident(position, {"data": jnp.asarray(indices)})
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), *grads)
    prior = dist.Normal(0.0, 1.0).log_prob(position["w"]).sum()
    prior += dist.Normal(0.0, 1.0).log_prob(position["b"])
    likelihood = dist.Bernoulli(logits=x[indices] @ position["w"] + position["b"])
    scaled = prior + N / BATCH * likelihood.log_prob(y[indices]).sum()
    np.testing.assert_allclose(streamed.logdensity(position, batch), scaled, rtol=1e-5)


@pytest.mark.parametrize("resume_chunk_steps", [7, 4, 13])
def test_a_checkpoint_written_inside_an_epoch_resumes_exactly(
    canonical, tmp_path, monkeypatch, resume_chunk_steps
):
    """Interrupted after step 20 of 40 (chunks of 7), resumed with chunks of 7, or of another
    length (the checkpoint records the next global step, not a chunk): the draws are the
    uninterrupted device-resident run's, bit for bit."""
    model, x, y, resident = canonical
    path = tmp_path / "stream.ckpt.npz"
    real_save, saved = checkpoint_module.Checkpoint.save, []

    def save_then_interrupt(self, state, chunk, progress):
        real_save(self, state, chunk, progress)
        saved.append(progress)
        if len(saved) == 3:  # after steps 0..20 of 40: inside epoch 2
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.Checkpoint, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _run(model, x, y, stream=True, chunk_steps=7, checkpoint_path=path)
    assert saved[-1] == {"next_epoch": 2, "next_step": 21}
    monkeypatch.setattr(checkpoint_module.Checkpoint, "save", real_save)
    resumed = _run(model, x, y, stream=True, chunk_steps=resume_chunk_steps, checkpoint_path=path)
    _assert_same_draws(resident, resumed)
    with pytest.raises(mk.infer.CheckpointError, match="streamed"):
        _run(model, x, y, checkpoint_path=path)  # a streamed checkpoint, a resident run


def test_a_failed_read_on_the_prefetch_thread_loses_nothing(canonical, tmp_path, monkeypatch):
    """A read of the next chunk's rows that fails on the background thread (a file gone, a
    disk error) is raised in the caller, with its type and message, once the chunk running
    meanwhile is done and checkpointed; the resumed run's draws are the uninterrupted ones."""
    model, x, y, resident = canonical
    path = tmp_path / "stream.ckpt.npz"
    real_take, calls = HostRows.take_chunk, []

    def failing_take(self, indices, *allocate):
        calls.append(1)
        # first_rows, the start-up pairing check's reordered rows, the checkpoint probe's
        # minibatches spread over the rows, chunks 0 and 1; chunk 2's read fails
        if len(calls) == 5 + SPREAD_BATCHES:
            raise OSError("the disk went away")
        return real_take(self, indices, *allocate)

    real_save, saved = checkpoint_module.Checkpoint.save, []

    def save(self, state, chunk, progress):
        real_save(self, state, chunk, progress)
        saved.append(progress["next_step"])

    monkeypatch.setattr(HostRows, "take_chunk", failing_take)
    monkeypatch.setattr(checkpoint_module.Checkpoint, "save", save)
    with pytest.raises(OSError, match="the disk went away"):
        _run(model, x, y, stream=True, chunk_steps=7, checkpoint_path=path)
    assert saved == [7, 14]  # chunks 0 and 1 kept
    monkeypatch.setattr(HostRows, "take_chunk", real_take)
    resumed = _run(model, x, y, stream=True, chunk_steps=7, checkpoint_path=path)
    _assert_same_draws(resident, resumed)


def test_memory_mapped_files_stream_and_the_device_never_holds_n_rows(tmp_path, monkeypatch):
    """Inputs and labels from .npy files opened with mmap_mode="r"; every chunk's rows reach
    the device as (chains, S |B|, ...) with their positions (chains, S, |B|), and no live
    device array has N rows."""
    x, y, _ = _problem(n=230, teachers=False)  # 11 steps per epoch; no other array of 230
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    x_map = np.load(tmp_path / "x.npy", mmap_mode="r")
    y_map = np.load(tmp_path / "y.npy", mmap_mode="r")
    assert isinstance(x_map, np.memmap)
    model = _users_model(None)
    shapes, holding_n = [], []
    real_take, real_select = HostRows.take_chunk, _stream_driver.select_draws

    def take_chunk(self, indices, *allocate):
        buffers, positions = real_take(self, indices, *allocate)
        shapes.append(([b.shape for b in buffers], [p.shape for p in positions]))
        return buffers, positions

    def select_draws(*args, **kwargs):  # between chunks, while the next chunk's rows arrive
        holding_n.append([a.shape for a in jax.live_arrays() if 230 in a.shape])
        return real_select(*args, **kwargs)

    monkeypatch.setattr(HostRows, "take_chunk", take_chunk)
    monkeypatch.setattr(_stream_driver, "select_draws", select_draws)
    streamed = _run(model, x_map, y_map, stream=True, chunk_steps=5)
    assert holding_n == [[]] * 9  # 44 steps in chunks of 5
    reads = streamed.settings["chunk_read_seconds"]  # the host's time per chunk, recorded
    assert len(reads) == len(streamed.settings["chunk_seconds"]) == 9 and min(reads) > 0
    _assert_same_draws(_run(model, x, y), streamed, exact=False)
    expected = {  # x (rows of 3 features) and y per chunk: 8 chunks of 5 steps, one of 4
        S: ([(2, S * BATCH, 3), (2, S * BATCH)], [(2, S, BATCH), (2, S, BATCH)]) for S in (5, 4)
    }
    # first_rows, then the start-up pairing check's reordered first rows
    assert shapes[:2] == [([(1, BATCH, 3), (1, BATCH)], [(1, BATCH)] * 2)] * 2
    assert shapes[2:11] == [expected[5]] * 8 + [expected[4]]
    # the end-of-run check: two minibatches of |B| rows for each of the 2 chains
    assert shapes[11:] == [([(1, BATCH, 3), (1, BATCH)], [(1, BATCH)] * 2)] * 4


@pytest.mark.parametrize(
    "labels",
    [
        "column",  # (N, 1)
        "strings",
        "fractions",
        "too many classes",
        "negative",
        "too short",
        "missing",
        "student of 3 classes",
    ],
)
def test_bad_labels_get_the_resident_paths_error(canonical, labels):
    """Labels (and the student's classes against the teachers') are checked as the
    device-resident path checks them: the same error type and message, whichever path the
    user takes."""
    model, x, y, _ = canonical
    bad = {
        "column": y[:, None],
        "strings": y.astype(str),
        "fractions": y + 0.5,
        "too many classes": np.where(y == 1, 2, y),
        "negative": y - 1,
        "too short": y[:-1],
        "missing": None,
        "student of 3 classes": y,
    }[labels]
    if labels == "student of 3 classes":  # the teachers have 2
        model = mk.MTBKDModel(
            mk.Student(mk.MLP(3, 3, hidden=(4,), rngs=nnx.Rngs(0))), model.teachers
        )
    errors = []
    for stream in (False, True):
        with pytest.raises((TypeError, ValueError)) as caught:
            _run(model, x, bad, stream=stream)
        errors.append((type(caught.value), str(caught.value)))
    assert errors[0] == errors[1]


def test_float_labels_of_whole_numbers_stream_as_the_resident_path_takes_them(canonical):
    model, x, y, resident = canonical
    _assert_same_draws(resident, _run(model, x, y.astype(np.float32), stream=True, chunk_steps=7))


@pytest.mark.parametrize(
    "argument, value",
    [
        ("mesh", "a mesh"),
        ("shard_data", True),
        ("warm_start_epochs", 1),
        ("partial_last_batch", True),
        ("step_size", "auto"),
    ],
)
def test_what_streaming_does_not_support_is_refused_by_name(argument, value):
    x, y, _ = _problem()
    if argument == "mesh":
        value = jax.make_mesh((1, 1), ("chains", "data"))
    with pytest.raises(ValueError, match=f"stream=True does not support {argument}="):
        _run(_users_model(None), x, y, stream=True, **{argument: value})


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # resident
def test_stream_arguments_are_checked():
    x, y, teachers = _problem()
    with pytest.raises(ValueError, match="chunk_steps applies to stream=True"):
        _run(_users_model(None), x, y, chunk_steps=5)
    with pytest.raises(TypeError, match="inputs is already a device array"):
        _run(_users_model(None), jnp.asarray(x), y, stream=True)
    bad = x.copy()
    bad[17, 1] = np.nan
    with pytest.raises(ValueError, match=r"inputs must be finite.*\(17, 1\)"):
        _run(_users_model(None), bad, y, stream=True)
    huge = x.astype(np.float64)
    huge[5, 2] = 1e39  # finite in float64, inf in the float32 the device takes
    for stream in (False, True):  # refused on both paths
        with pytest.raises(ValueError, match="inputs must be finite"):
            _run(_users_model(None), huge, y, stream=stream)

    def two_plates(x, y, z):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0], subsample_size=BATCH) as i:
            numpyro.sample("y", dist.Bernoulli(logits=x[i, 0] * w), obs=y[i])
        with numpyro.plate("other", N, subsample_size=10) as j:
            numpyro.sample("z", dist.Normal(w, 1.0), obs=z[j])

    with pytest.raises(ValueError, match=r"model_kwargs\['z'\] has 200 rows.*'data', 'other'"):
        _run(two_plates, x, y, stream=True, model_kwargs={"z": x[:, 0]})


def test_pages_are_handed_back_by_the_rows_they_hold(tmp_path):
    """The byte range of rows [a, b) of a memory-mapped ``.npy`` (and of a view of it) starts on
    a page boundary at or before row a and ends at or after row b; handing those pages back
    leaves every value readable and unchanged."""
    import mmap

    values = np.arange(5000 * 7, dtype=np.float32).reshape(5000, 7)
    np.save(tmp_path / "x.npy", values)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    raw = mapped._mmap
    header = mapped.__array_interface__["data"][0] - np.frombuffer(raw, np.uint8).ctypes.data
    row_bytes = 7 * 4
    for array, shift in ((mapped, 0), (mapped[1000:], 1000)):
        begin, length = _byte_range(raw, array, 10, 2000)
        assert begin % mmap.PAGESIZE == 0 and length > 0
        assert begin <= header + (shift + 10) * row_bytes
        assert begin + length >= header + (shift + 2000) * row_bytes
        assert begin + length <= len(raw)
        release_pages(array, (10, 2000))
        np.testing.assert_array_equal(np.asarray(array[10:2000]), values[shift + 10 : shift + 2000])
    release_pages(mapped)
    np.testing.assert_array_equal(np.asarray(mapped), values)
    in_memory = values.copy()
    release_pages(in_memory, (0, 10))  # no map: nothing to do
    np.testing.assert_array_equal(in_memory, values)


@pytest.mark.parametrize("kind", ["map", "view of a map", "copy-on-write map", "in memory"])
def test_a_chunks_rows_are_the_rows_at_its_indices(tmp_path, monkeypatch, kind):
    """``HostRows.take`` gives ``leaf[indices]`` cast to the device dtype, in step order, for
    indices of any shape with repeats (a chunk spanning two epochs), read in blocks (made small
    here, so a chunk spans several) from a map, a view of one, a copy-on-write map or memory;
    the shared map's pages are handed back once per block, by the block's stretch."""
    import mtbkd_jax.infer._host_rows as host_rows

    monkeypatch.setattr(host_rows, "_BLOCK_ROWS", 64)
    values = np.random.default_rng(0).normal(size=(3000, 4))  # float64 on the host
    np.save(tmp_path / "x.npy", values)
    mode = "c" if kind == "copy-on-write map" else "r"
    leaf = values.copy() if kind == "in memory" else np.load(tmp_path / "x.npy", mmap_mode=mode)
    if kind == "view of a map":
        leaf, values = leaf[500:], values[500:]
    released = []
    monkeypatch.setattr(host_rows, "release_pages", lambda a, rows: released.append(rows))
    rows = HostRows(None, ("data",), (leaf,), (np.dtype(np.float32),), ())
    rng = np.random.default_rng(1)
    indices = np.stack([rng.permutation(len(values))[:300].reshape(3, 100) for _ in range(2)])
    (taken,) = rows.take({"data": indices})  # (chains 2, steps 3, batch 100), repeats across
    assert taken.shape == (2, 3, 100, 4) and taken.dtype == np.float32
    np.testing.assert_array_equal(taken, values[indices].astype(np.float32))
    if kind in ("map", "view of a map"):
        assert len(released) == -(-indices.size // 64)  # once per block of 64 rows
        assert all(a <= b for a, b in released) and sorted(released) == released  # ascending
    else:
        assert released == []  # nothing to hand back (or the caller's edits to keep)
    # a chunk as the device reads it: per chain, the rows and where each step's lie among them
    ((buffer,), (positions,)) = rows.take_chunk({"data": indices})
    assert buffer.shape == (2, 300, 4) and positions.shape == (2, 3, 100)
    assert positions.dtype == np.int32
    for chain in range(2):
        np.testing.assert_array_equal(buffer[chain][positions[chain]], taken[chain])
        in_file_order = np.sort(indices[chain].reshape(-1))
        expected = values[
            in_file_order if "map" in kind and "copy" not in kind else indices[chain].reshape(-1)
        ]
        np.testing.assert_array_equal(buffer[chain], expected.astype(np.float32))


def test_checks_and_digests_of_a_map_hand_its_pages_back_slice_by_slice(tmp_path, monkeypatch):
    """The finiteness check and the checkpoint's data digest read a memory map a slice at a
    time and hand each slice's pages back (by its rows: no walk of the whole map), covering
    every row once; the digest equals the in-memory array's."""
    import mtbkd_jax.infer._host_rows as host_rows
    import mtbkd_jax.infer.fingerprint as fingerprint

    values = np.random.default_rng(0).normal(size=(5000, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", values)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    expected = fingerprint.array_digest(values)
    released = []
    monkeypatch.setattr(host_rows, "release_pages", lambda a, rows=None: released.append(rows))
    monkeypatch.setattr(fingerprint, "release_pages", host_rows.release_pages)
    monkeypatch.setattr(fingerprint, "_SLICE_BYTES", 32 * 700)  # 700 rows a slice
    assert fingerprint.array_digest(mapped) == expected
    assert released == [(a, min(a + 700, 5000)) for a in range(0, 5000, 700)]
    released.clear()
    host_rows.check_finite_rows(mapped, "inputs")
    assert None not in released and released[0][0] == 0 and released[-1][1] == 5000
    assert all(a[1] == b[0] for a, b in zip(released, released[1:], strict=False))


def test_a_copy_on_write_map_keeps_the_callers_edits(tmp_path):
    """Pages of a copy-on-write map (``mmap_mode="c"``) are never handed back: the caller's
    in-place edits (e.g. standardised features) are what the checks and the gather read."""
    from mtbkd_jax.infer._host_rows import check_finite_rows

    np.save(tmp_path / "x.npy", np.ones((3000, 5), np.float32))
    edited = np.load(tmp_path / "x.npy", mmap_mode="c")
    edited[:] = 5.0
    check_finite_rows(edited, "inputs")
    release_pages(edited, (0, 3000))
    release_pages(edited)
    np.testing.assert_array_equal(np.asarray(edited), 5.0)


def test_a_small_labelled_set_with_a_large_transfer_set_streams():
    """All N labelled rows every step (batch_size = N) and a subsampled transfer set: the inputs
    and labels are gathered by the data plate, not by the plate that sets the epoch."""
    x, y, _ = _problem(n=BATCH, seed=2)
    transfer, _, teachers = _problem(n=200, seed=3)
    model = _canonical(teachers)
    kwargs = dict(model_kwargs={"prior_inputs": transfer}, batch_size=BATCH, prior_batch_size=BATCH)
    resident = _run(model, x, y, **kwargs)
    assert [p[0] for p in resident.settings["plates"]] == ["transfer", "data"]
    _assert_same_draws(resident, _run(model, x, y, stream=True, chunk_steps=7, **kwargs))


def test_a_chunk_longer_than_the_run_holds_only_the_run():
    """``chunk_steps`` far beyond the run's steps: one chunk of the run's length (no buffer of
    a million kept slots), the resident draws."""
    x, y, teachers = _problem()
    model = _canonical(teachers)
    resident = _run(model, x, y)
    _assert_same_draws(resident, _run(model, x, y, stream=True, chunk_steps=10**6))


def test_a_zero_dimensional_keyword_and_a_wrong_row_plate():
    """A 0-d host array among the model's keywords stays whole on the device; a ``row_plates``
    that names a plate of another size is refused, naming the keyword."""
    x, y, _ = _problem(teachers=False)

    def model(x, y=None, scale=None, offsets=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
        with numpyro.plate("data", x.shape[0], subsample_size=BATCH) as idx:
            logits = scale * (x[idx] @ w) + (0.0 if offsets is None else offsets[idx])
            numpyro.sample("y", dist.Bernoulli(logits=logits), obs=y[idx])

    kwargs = {"scale": np.array(0.5, np.float32)}
    resident = _run(model, x, y, model_kwargs=kwargs)
    streamed = _run(model, x, y, model_kwargs=kwargs, stream=True, chunk_steps=4)
    _assert_same_draws(resident, streamed, exact=False)

    class Declared:
        def __call__(self, *args, **kwargs):
            return model(*args, **kwargs)

        def row_plates(self, model_kwargs):
            return {"offsets": "transfer"}

    offsets = {"scale": np.array(0.5, np.float32), "offsets": np.zeros(N, np.float32)}
    with pytest.raises(ValueError, match=r"row_plates says plate 'transfer' indexes "):
        _run(Declared(), x, y, model_kwargs=offsets, stream=True, chunk_steps=4)


def test_the_labels_range_is_read_a_block_at_a_time_and_hands_a_maps_pages_back(
    tmp_path, monkeypatch
):
    """``label_range`` (the labels check of both paths) reads a memory-mapped labels file in
    blocks of ``LABEL_BLOCK`` and hands each block's pages back; its range is NumPy's."""
    from mtbkd_jax import _checks
    from mtbkd_jax.infer import _host_rows as host_rows

    monkeypatch.setattr(_checks, "LABEL_BLOCK", 1000)
    labels = np.random.default_rng(0).integers(0, 7, size=3500).astype(np.int32)
    labels[2345] = 9
    np.save(tmp_path / "y.npy", labels)
    mapped = np.load(tmp_path / "y.npy", mmap_mode="r")
    released = []
    monkeypatch.setattr(host_rows, "release_pages", lambda a, rows: released.append(rows))
    assert _checks.label_range(mapped) == (int(labels.min()), 9)
    assert released == [(0, 1000), (1000, 2000), (2000, 3000), (3000, 3500)]
    assert _checks.label_range(np.zeros(0, np.int32)) == (0, -1)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.7 .* got values in 0\.\.9"):
        _checks.checked_labels(mapped, "labels", 3500, 8)


def _sharp_mean(x, y=None):
    """Posterior sd 0.1 (precision 100): SGLD with exact gradients is stable for h < 0.02."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    with numpyro.plate("data", x.shape[0], subsample_size=x.shape[0]) as i:
        numpyro.sample("obs", dist.Normal(mu, 1.0), obs=x[i, 0])


def test_a_streamed_run_is_checked_at_its_end_as_a_resident_one():
    """The end-of-run check (T / tau at the chains' last states) now runs on a streamed run,
    its minibatches gathered on the host: a step past the stability limit (h = 0.0205, limit
    0.02 with every row in the batch) is warned about, as on the device-resident path, and
    a stable one (h = 0.005) is not and ends near T / tau = 1. Before, ``stream=True`` (where
    the step cannot be chosen by the pilots) returned such draws without a word. With
    every row in each minibatch both paths measure the same quantity at the same last
    states: their ratios agree to float rounding."""
    import warnings

    x = np.zeros((100, 1), np.float32)
    settings = dict(batch_size=100, num_epochs=300, num_burnin_epochs=100, draws_per_epoch=1,
                    num_chains=4, progress_bar=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at a stable step
        calm = mk.run_sgmcmc(jax.random.key(0), _sharp_mean, x, step_size=0.005, stream=True,
                             **settings)  # fmt: skip
    assert 0.5 < calm.settings["end_temperature_ratio"] < 2.0
    with pytest.warns(mk.infer.ConvergenceWarning, match="configurational temperature"):
        hot = mk.run_sgmcmc(jax.random.key(0), _sharp_mean, x, step_size=0.0205, stream=True,
                            **settings)  # fmt: skip
    assert hot.settings["end_temperature_ratio"] > 1e6
    resident = mk.run_sgmcmc(jax.random.key(0), _sharp_mean, jnp.asarray(x), step_size=0.005,
                             **settings)  # fmt: skip
    np.testing.assert_array_equal(resident.draws["mu"], calm.draws["mu"])
    assert calm.settings["end_temperature_ratio"] == pytest.approx(
        resident.settings["end_temperature_ratio"], rel=1e-4
    )


def _two_plates(x, y=None, aux=None):
    """A mean with two subsampled plates (20 of 100 rows, 10 of 60)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    with numpyro.plate("data", x.shape[0], subsample_size=20) as i:
        numpyro.sample("obs", dist.Normal(mu, 1.0), obs=x[i, 0])
    with numpyro.plate("aux", aux.shape[0], subsample_size=10) as j:
        numpyro.factor("pull", -0.5 * (aux[j] - mu) ** 2)


def test_the_streamed_end_check_measures_what_the_resident_one_does():
    """With minibatches smaller than the data (two plates), the streamed run's end check
    gathers on the host the rows the resident check draws from the same key: at the same
    last states the two ratios agree to float rounding (the first host draw used another
    generator and gave 5.7 where the resident check gave 0.09, either side of the warning's
    threshold of 10)."""
    rng = np.random.default_rng(3)
    x = rng.normal(1.0, 1.0, size=(100, 1)).astype(np.float32)
    aux = rng.normal(0.5, 1.0, size=60).astype(np.float32)
    settings = dict(num_epochs=20, num_burnin_epochs=5, draws_per_epoch=1, num_chains=2,
                    step_size=1e-3, progress_bar=False)  # fmt: skip
    streamed = mk.run_sgmcmc(jax.random.key(0), _two_plates, x, stream=True,
                             model_kwargs={"aux": aux}, **settings)  # fmt: skip
    resident = mk.run_sgmcmc(jax.random.key(0), _two_plates, jnp.asarray(x),
                             model_kwargs={"aux": jnp.asarray(aux)}, **settings)  # fmt: skip
    np.testing.assert_allclose(streamed.draws["mu"], resident.draws["mu"], rtol=1e-5)
    assert streamed.settings["end_temperature_ratio"] == pytest.approx(
        resident.settings["end_temperature_ratio"], rel=1e-4
    )


def test_an_end_check_that_fails_loses_no_draws(monkeypatch):
    """The end check is a diagnostic: if it cannot run (here made to raise), the finished
    run's draws come back with a warning saying they are unchecked."""
    from mtbkd_jax.infer import _end_check

    def broken(*args, **kwargs):
        raise RuntimeError("no forward-over-reverse derivative")

    monkeypatch.setattr(_end_check, "end_measures", broken)
    x = np.zeros((100, 1), np.float32)
    with pytest.warns(UserWarning, match="could not measure .* no forward-over-reverse"):
        posterior = mk.run_sgmcmc(jax.random.key(0), _sharp_mean, x, stream=True,
                                  num_epochs=3, draws_per_epoch=1, step_size=1e-3,
                                  progress_bar=False)  # fmt: skip
    assert posterior.draws["mu"].size > 0
    assert posterior.settings.get("end_temperature_ratio") is None


def test_a_finished_streamed_run_lets_the_host_arrays_go():
    """jit's caches keep every compiled call's pytree aux data alive; the streamed estimator's
    aux held the run's host rows, and with them the user's arrays, until
    ``jax.clear_caches()``. It now holds them by weak reference: once the caller drops its
    arrays (and the run is over), they are freed."""
    import gc
    import weakref

    def run():
        x = np.random.default_rng(0).normal(size=(200, 1)).astype(np.float32)
        posterior = mk.run_sgmcmc(jax.random.key(0), _sharp_mean, x, stream=True,
                                  batch_size=200, num_epochs=2, draws_per_epoch=1,
                                  step_size=1e-3, progress_bar=False)  # fmt: skip
        return weakref.ref(x), posterior

    alive, posterior = run()
    gc.collect()
    assert posterior.draws["mu"].size > 0
    assert alive() is None


def test_a_saved_streamed_posterior_refuses_another_network_at_load(canonical, tmp_path):
    """A streamed run's posterior holds no inputs, so its file carried no logits check and
    ``Posterior.load`` accepted another network (a relu student for a tanh posterior predicted
    up to 0.09 off, a review found). It keeps two training rows for the check: the saved
    first draw's logits on them are the resident run's, and a relu student is refused."""
    model, x, y, resident = canonical
    streamed = _run(model, x, y, stream=True, draws_per_epoch=1)
    np.testing.assert_array_equal(streamed.check_features, x[:2])
    streamed.save(tmp_path / "streamed.nc")
    back = mk.infer.Posterior.load(tmp_path / "streamed.nc", logits_fn=model.logits)
    np.testing.assert_allclose(back.predict(x[:5]), streamed.predict(x[:5]), rtol=1e-6)
    _, _, teachers = _problem()
    relu = mk.MTBKDModel(
        mk.Student(mk.MLP(3, 2, hidden=(4,), activation="relu", rngs=nnx.Rngs(0))), teachers
    )
    with pytest.raises(ValueError, match="logits_fn does not give this posterior's logits"):
        mk.infer.Posterior.load(tmp_path / "streamed.nc", logits_fn=relu.logits)


def test_a_streamed_checkpoint_resumes_from_the_same_data_stored_in_another_dtype(
    canonical, tmp_path
):
    """The fingerprint digests a streamed run's files as the device holds them (float32
    inputs, int32 labels): the same labels saved as uint8 or int64, the same inputs as float32
    or float64, resume (refused before, saying the data had changed, while the resident path
    accepted them); other labels are still refused."""
    model, x, y, _ = canonical
    files = {
        "x32": x, "x64": x.astype(np.float64), "y8": y.astype(np.uint8),
        "y64": y.astype(np.int64), "flipped": (1 - y).astype(np.int64),
    }  # fmt: skip
    for name, array in files.items():
        np.save(tmp_path / f"{name}.npy", array)

    def load(name):
        return np.load(tmp_path / f"{name}.npy", mmap_mode="r")

    path = tmp_path / "run.ckpt"
    first = _run(model, load("x32"), load("y8"), stream=True, checkpoint_path=path)
    again = _run(model, load("x64"), load("y64"), stream=True, checkpoint_path=path)
    _assert_same_draws(first, again)
    with pytest.raises(checkpoint_module.CheckpointError, match="labels"):
        _run(model, load("x32"), load("flipped"), stream=True, checkpoint_path=path)


def test_a_streamed_checkpoint_refuses_a_model_edited_where_the_first_minibatch_cannot_see(
    tmp_path,
):
    """Data sorted by class (the first minibatch all class 0) and a model of one's own whose
    class-1 likelihood weight is edited from 1 to 2 before the rerun: the streamed run resumed
    silently (its probe read the first minibatch only; a review's draws then matched neither
    model, off by up to 2). The probe now also reads minibatches spread over the rows."""
    x, y, _ = _problem(teachers=False)
    order = np.argsort(y, kind="stable")
    np.save(tmp_path / "x.npy", x[order])
    np.save(tmp_path / "y.npy", y[order])
    assert not y[order][:BATCH].any()
    student = mk.Student(mk.MLP(3, 2, hidden=(4,), rngs=nnx.Rngs(0)))

    def weighted(weight):
        def model(x, y=None):
            network = student.network(x.shape[1:])
            with numpyro.plate("data", x.shape[0], subsample_size=BATCH) as idx:
                logits = network(x[idx])
                w = jnp.where(y[idx] == 1, weight, 1.0)
                numpyro.factor("y", w * dist.Categorical(logits=logits).log_prob(y[idx]))

        return model

    x_file, y_file = (np.load(tmp_path / f"{n}.npy", mmap_mode="r") for n in ("x", "y"))
    path = tmp_path / "run.ckpt"
    _run(weighted(1.0), x_file, y_file, stream=True, checkpoint_path=path, logits_fn=student.logits)
    with pytest.raises(checkpoint_module.CheckpointError, match="logdensity_on_rows_spread"):
        _run(weighted(2.0), x_file, y_file, stream=True, checkpoint_path=path,
             logits_fn=student.logits)  # fmt: skip
