"""Experiments over seeds: run one function for several seeds, summarise, compare, print.

Introduced in chapter 03, notebooks/03-locality.ipynb; every chapter that trains uses it.

A trained network is one draw: its initial weights, the order of its batches and its dropout
masks all come from a seed, and another seed gives another accuracy. A claim about trained
models therefore rests on several seeds (Agarwal et al. 2021): `over_seeds` runs an experiment
once per seed and returns one `Summary` per metric (its values, mean and standard deviation),
`difference` pairs two metrics seed by seed (the same seed gives both models the same data
order, so the pairing removes that source of noise), and `Summary.interval` is the 95%
confidence interval of the mean (Student's t). A chapter asserts on such intervals, never on
one draw. Seeds run one after another: training several seeds at once with `jax.vmap` was
measured 3.7 times slower per seed on a CPU (XLA turns the batched convolutions into grouped
ones).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import jax
import numpy as np

from cnnlib.layers import Layer, init_params, init_state
from cnnlib.train import evaluate, fit

# Two-sided 95% quantiles of Student's t with 1..30 degrees of freedom; 1.96 beyond.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


class Summary(NamedTuple):
    """One metric over seeds: the per-seed values, in seed order.

    Example:
        >>> s = Summary((0.90, 0.92, 0.91))
        >>> round(s.mean, 3), round(s.std, 3), [round(v, 3) for v in s.interval()]
        (0.91, 0.01, [0.885, 0.935])
        >>> f"{s:.3f}"
        '0.910 ± 0.010'

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        """Number of seeds."""
        return len(self.values)

    @property
    def mean(self) -> float:
        """Mean over seeds."""
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (ddof 1; 0 for one seed)."""
        return float(np.std(self.values, ddof=1)) if self.n > 1 else 0.0

    @property
    def min(self) -> float:
        return float(np.min(self.values))

    @property
    def max(self) -> float:
        return float(np.max(self.values))

    def interval(self) -> tuple[float, float]:
        """95% confidence interval of the mean: ``mean ± t * std / sqrt(n)`` (Student's t).

        It says where the mean over *all* seeds likely lies, given these; with 3 seeds t is
        4.30, so the interval is wide unless the seeds agree closely.
        """
        if self.n < 2:
            raise ValueError(
                f"Summary.interval: needs at least 2 values; got {self.n}. Run more seeds."
            )
        t = _T95[self.n - 2] if self.n - 1 <= len(_T95) else 1.96
        half = t * self.std / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.mean:{spec}} ± {self.std:{spec}}"

    def __str__(self) -> str:
        return format(self)


def over_seeds(
    run: Callable[[int], Mapping[str, float]],
    seeds: Iterable[int] = (0, 1, 2),
    *,
    progress: bool = False,
) -> dict[str, Summary]:
    """Run ``run(seed)`` for every seed; collect each metric it returns into a `Summary`.

    Args:
        run: a function of an int seed returning a dict of floats, e.g.
            ``{"test accuracy": 0.91, "train loss": 0.25}``; the same keys for every seed.
        seeds: the seeds, at least one.
        progress: print one line per seed with its metrics and time.

    Returns:
        ``{metric: Summary}``, in the order `run` returned the metrics.

    Example:
        >>> result = over_seeds(lambda seed: {"x": seed * 2.0}, seeds=(0, 1, 2))
        >>> result["x"].values, result["x"].mean
        ((0.0, 2.0, 4.0), 2.0)

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    seeds = tuple(seeds)
    if not seeds or not all(isinstance(s, (int, np.integer)) for s in seeds):
        raise ValueError(
            f"over_seeds: `seeds` must be a non-empty sequence of ints; got {seeds!r}."
        )
    if not callable(run):
        raise TypeError(
            f"over_seeds: `run` must be a function of a seed; got {type(run).__name__}."
        )
    rows: list[dict[str, float]] = []
    for seed in seeds:
        start = time.perf_counter()
        metrics = run(int(seed))
        if not isinstance(metrics, Mapping) or not metrics:
            raise TypeError(
                f"over_seeds: `run` must return a non-empty dict of floats; got "
                f"{type(metrics).__name__} for seed {seed}."
            )
        if rows and list(metrics) != list(rows[0]):
            raise ValueError(
                f"over_seeds: `run` returned the metrics {list(metrics)} for seed {seed} but "
                f"{list(rows[0])} for seed {seeds[0]}; return the same keys every time."
            )
        rows.append({name: float(value) for name, value in metrics.items()})
        if progress:
            shown = ", ".join(f"{name} {value:.4f}" for name, value in rows[-1].items())
            print(f"seed {seed}: {shown} ({time.perf_counter() - start:.1f} s)", flush=True)
    return {name: Summary(tuple(row[name] for row in rows)) for name in rows[0]}


def difference(a: Summary, b: Summary) -> Summary:
    """Seed-by-seed difference ``a - b`` of two metrics measured on the same seeds.

    Example:
        >>> difference(Summary((0.9, 0.92)), Summary((0.85, 0.88))).values
        (0.05..., 0.04...)

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    if not isinstance(a, Summary) or not isinstance(b, Summary) or a.n != b.n:
        raise ValueError(
            f"difference: `a` and `b` must be Summary objects over the same seeds; got "
            f"{type(a).__name__} and {type(b).__name__} with {getattr(a, 'n', '?')} and "
            f"{getattr(b, 'n', '?')} values."
        )
    return Summary(tuple(x - y for x, y in zip(a.values, b.values)))


def table(rows: Mapping[str, Mapping[str, Summary]], digits: int = 3) -> str:
    """A text table: one row per entry of `rows`, one column per metric, "mean ± std".

    Args:
        rows: ``{row name: {metric: Summary}}``, e.g. one `over_seeds` result per model.
        digits: decimals shown.

    Returns:
        The table as a string (print it), with the per-seed values of every cell below it.

    Example:
        >>> print(table({"cnn": {"acc": Summary((0.90, 0.92))}}, digits=2))
        model  acc
        cnn    0.91 ± 0.01
        <BLANKLINE>
        per seed: cnn acc 0.90 0.92

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    metrics = list(next(iter(rows.values())))
    width = max(len("model"), *(len(name) for name in rows))
    cells = {name: [format(row[m], f".{digits}f") for m in metrics] for name, row in rows.items()}
    widths = [max(len(m), *(len(c[i]) for c in cells.values())) for i, m in enumerate(metrics)]
    lines = ["  ".join([f"{'model':<{width}}", *(f"{m:<{w}}" for m, w in zip(metrics, widths))])
             .rstrip()]
    for name, row in cells.items():
        lines.append("  ".join([f"{name:<{width}}", *(f"{c:<{w}}" for c, w in zip(row, widths))])
                     .rstrip())
    lines.append("")
    for name, row in rows.items():
        for m in metrics:
            values = " ".join(f"{v:.{digits}f}" for v in row[m].values)
            lines.append(f"per seed: {name} {m} {values}")
    return "\n".join(lines)


class Run(NamedTuple):
    """One seed's trained model: its seed, params, state ({} without) and `fit` history.

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """

    seed: int
    params: Any
    state: Any
    history: dict


class Runs(tuple):
    """The `Run` of every seed, in seed order, with summaries over them.

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """

    def final(self, metric: str) -> Summary:
        """The last epoch's value of a `fit` history entry ("val_accuracy", "loss", ...)."""
        missing = [run.seed for run in self if metric not in run.history]
        if missing:
            raise KeyError(
                f"Runs.final: `metric` {metric!r} is not in the history of seeds {missing}; it "
                f"has {sorted(self[0].history)}."
            )
        return Summary(tuple(float(run.history[metric][-1]) for run in self))

    def evaluate(self, apply: Callable, x: Any, y: Any) -> dict[str, Summary]:
        """``{"loss": Summary, "accuracy": Summary}`` of every seed's model on ``(x, y)``."""
        results = [evaluate(apply, run.params, x, y, state=run.state or None) for run in self]
        return {"loss": Summary(tuple(r[0] for r in results)),
                "accuracy": Summary(tuple(r[1] for r in results))}


def train_seeds(
    model: Any,
    optimizer: Any,
    train_data: tuple[Any, Any],
    *,
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int,
    batch_size: int,
    **fit_kwargs: Any,
) -> Runs:
    """Train `model` once per seed with `cnnlib.train.fit`: the seed draws everything random.

    For seed s, ``jax.random.split(jax.random.key(s))`` gives the key of the initial weights and
    the key of `fit` (batch order, augmentation, dropout). A model with state (BatchNorm)
    starts from `cnnlib.layers.init_state`. Seeds run one after another.

    Args:
        model: a `Layer`; its input shape is read from `train_data`.
        optimizer: an optax `GradientTransformation`, the same for every seed.
        train_data: ``(x, y)`` as for `fit`.
        seeds: the seeds, at least one.
        epochs, batch_size: as for `fit`.
        **fit_kwargs: passed to `fit` (``validation=``, ``augment=``, ...); ``progress``
            defaults to False.

    Returns:
        `Runs`: one `Run` per seed, in order, e.g. ``runs.final("val_accuracy")`` and
        ``runs.evaluate(model.apply, x_test, y_test)``.

    Example:
        >>> runs = train_seeds(models.cnn((16, 32)), optax.adam(1e-3), (x, y), epochs=2,
        ...                    batch_size=128, validation=(x_val, y_val))  # doctest: +SKIP
        >>> print(runs.final("val_accuracy"))  # mean ± std over seeds 0, 1, 2  # doctest: +SKIP

    Introduced in chapter 06, notebooks/06-training.ipynb.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"train_seeds: `model` must be a Layer; got {type(model).__name__}.")
    seeds = tuple(seeds)
    if not seeds or not all(isinstance(s, (int, np.integer)) for s in seeds):
        raise ValueError(
            f"train_seeds: `seeds` must be a non-empty sequence of ints; got {seeds!r}."
        )
    in_shape = (-1, *np.shape(train_data[0])[1:])
    fit_kwargs.setdefault("progress", False)
    runs = []
    for seed in seeds:
        init_key, fit_key = jax.random.split(jax.random.key(int(seed)))
        _, params = init_params(model, init_key, in_shape)
        if model.init_state is None:
            params, history = fit(model.apply, params, optimizer, train_data, epochs=epochs,
                                  batch_size=batch_size, key=fit_key, **fit_kwargs)
            state = {}
        else:
            params, state, history = fit(
                model.apply, params, optimizer, train_data, epochs=epochs, batch_size=batch_size,
                key=fit_key, state=init_state(model, in_shape), **fit_kwargs)
        runs.append(Run(int(seed), params, state, history))
    return Runs(runs)


def interval_text(summary: Summary, digits: int = 3) -> str:
    """``"0.912 [0.905, 0.919]"``: a mean and its 95% interval, for prose and printouts."""
    low, high = summary.interval()
    return f"{summary.mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


__all__ = ["Summary", "over_seeds", "difference", "table", "interval_text", "Run", "Runs",
           "train_seeds"]
