"""Does the search stay model-based when trials run side by side? TPE at 1, 2 and 4 slots against
random search, at the same budget, over several search seeds.

``python -m bench.benchmarks.concurrency [--config configs/digits.yaml] [--method erm] [--trials 9]
[--slots 1 --slots 2 --slots 4] [--search-seed 0 --search-seed 1 ...] [--epochs N]``

A measurement, not a test: it prints figures. Concurrency is simulated in this process, with the
searcher and studies of a real run (:class:`bench.search.searcher.BenchmarkSearcher` on a sqlite
Optuna storage, its startup rule and sampler): a pool of C slots, where a trial is asked when a
slot is free (the searcher's gate set to C, as the driver sets it) and told when it ends, in the
order of its *measured* training seconds. Each asked trial is trained at once (trials are
deterministic for a config: the training seed is fixed, so equal configs are trained once), and
its result reaches the searcher only at its simulated end: the sampler knows what it would know
in a real run with C trials in flight. No ASHA: every trial trains all its epochs, so the figure
is about the sampler alone. Random search draws the same configs at any concurrency (its draws
ignore results), so it is run once per seed.
"""

from __future__ import annotations

import heapq
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from bench import metrics
from bench.catalog import load_benchmark
from bench.config import BenchmarkConfig, with_final
from bench.plan import METHOD_KEY, SUGGESTION_KEY, plan_methods, trial_spec
from bench.search.live import LIVE, LiveRun
from bench.search.searcher import BenchmarkSearcher
from bench.search.space import MODEL
from bench.search.studies import default_storage

#: ``(trial config) -> (search metric value, seconds the trial took)``.
Evaluate = Callable[[dict[str, Any]], tuple[float, float]]


@dataclass(frozen=True)
class SimTrial:
    trial_id: str
    method: str
    kind: str | None  # suggestion_kind
    config: dict[str, Any]
    value: float
    asked_at: float  # simulated seconds
    ended_at: float
    in_flight: int  # trials running (this one included) right after it was asked


def simulate(config: BenchmarkConfig, slots: int, evaluate: Evaluate, folder: Path) -> list[SimTrial]:
    """Run ``config``'s search (no final runs) with ``slots`` trials in flight; the trials in the
    order they ended. ``folder`` holds the sqlite study storage."""
    config = with_final(config, seeds=[]) if config.final.seeds else config
    folder.mkdir(parents=True, exist_ok=True)
    plans = {plan.regularizer: plan for plan in plan_methods(config)}
    live = LiveRun(
        config=config,
        plans=plans,
        results_dir=folder,
        tracking_uri="",
        optuna_storage=default_storage(folder),
        instance=f"c{slots}",
    )
    LIVE.bind(live)
    try:
        searcher = BenchmarkSearcher(
            metric=config.search.metric,
            mode=metrics.OBJECTIVES[config.search.metric],
            plans=list(plans.values()),
            config=config,
            storage=live.optuna_storage,
            instance=live.instance,
            final_only=False,
        )
        searcher.set_max_concurrency(slots)
        clock, asked, ended = 0.0, 0, []
        running: list[tuple[float, int, SimTrial]] = []
        epochs = {name: plan.budget.epochs for name, plan in plans.items()}
        while True:
            while True:  # every free slot the searcher will fill now
                trial_id = f"t{asked:04d}"
                suggested = searcher.suggest(trial_id)
                if not isinstance(suggested, dict):
                    break
                asked += 1
                value, seconds = evaluate(suggested)
                trial = SimTrial(
                    trial_id,
                    suggested[METHOD_KEY],
                    suggested.get(SUGGESTION_KEY),
                    suggested,
                    value,
                    clock,
                    clock + seconds,
                    len(running) + 1,
                )
                heapq.heappush(running, (trial.ended_at, asked, trial))
            if not running:
                if suggested != searcher.FINISHED:
                    raise RuntimeError("the searcher waits with no trial running: it would never be asked again")
                return ended
            clock, _, trial = heapq.heappop(running)
            method_epochs = epochs[trial.method]
            result = {
                config.search.metric: trial.value,
                metrics.EPOCH: method_epochs,
                metrics.EPOCHS_PLANNED: method_epochs,
                metrics.WALL_SECONDS: trial.ended_at - trial.asked_at,
            }
            searcher.on_trial_complete(trial.trial_id, result=result)
            LIVE.run.row_written(trial.trial_id)  # no sink here: the row is "written" at once
            ended.append(trial)
    finally:
        LIVE.bind(None)


def trainer_evaluate(config: BenchmarkConfig, method: str) -> Evaluate:
    """Train a trial config of ``method`` to its last epoch: (search metric, measured seconds).
    Cached by config: a trial is deterministic for its config (fixed training seed)."""
    from bench.data import load_dataset
    from bench.training import Trainer

    plan = next(p for p in plan_methods(config) if p.regularizer == method)
    dataset = load_dataset(config.dataset)
    cache: dict[str, tuple[float, float]] = {}

    def evaluate(sampled: dict[str, Any]) -> tuple[float, float]:
        key = json.dumps({k: v for k, v in sampled.items() if isinstance(v, dict)}, sort_keys=True)
        if key not in cache:
            started = time.perf_counter()
            trainer = Trainer(trial_spec(config, plan, {**sampled, "seed": config.seed}), dataset=dataset)
            value = float("nan")
            while not trainer.finished:
                value = float(trainer.train_epoch().to_metrics()[config.search.metric])
            cache[key] = (value, time.perf_counter() - started)
        return cache[key]

    return evaluate


def best_so_far(trials: list[SimTrial], maximize: bool) -> list[float]:
    """Best value after each ended trial (ended order)."""
    out: list[float] = []
    for trial in trials:
        value = trial.value
        out.append(value if not out else (max if maximize else min)(out[-1], value))
    return out


def main(
    config_path: Path = typer.Option(Path("configs/digits.yaml"), "--config"),
    method: str = typer.Option("erm", "--method"),
    trials: int = typer.Option(9, "--trials", min=2, help="Trials per search (every strategy)."),
    slots: list[int] = typer.Option([1, 2, 4], "--slots", help="Concurrent trials (repeatable)."),
    search_seeds: list[int] = typer.Option([0, 1, 2], "--search-seed"),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Override training.epochs (a quicker figure)."),
) -> None:
    """Model-based fraction and best validation figure: TPE at each slot count, and random search."""
    import optuna

    from bench.console import Verbosity, quiet_third_party

    quiet_third_party(Verbosity.normal)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = load_benchmark(config_path)
    entry = next(e for e in base.regularizers if e.name == method)
    update: dict[str, Any] = {"regularizers": [entry]}
    search = base.search.model_copy(update={"trials_per_method": trials})
    if epochs is not None:
        update["training"] = base.training.model_copy(update={"epochs": epochs})
    base = base.model_copy(update={**update, "search": search})
    maximize = metrics.OBJECTIVES[base.search.metric] == "max"
    evaluate = trainer_evaluate(base, method)
    rows: dict[str, list[list[SimTrial]]] = {}
    started = time.perf_counter()
    for seed in search_seeds:
        for name, count in [("random", 1), *(("tpe", c) for c in slots)]:
            sampler = base.search.sampler.model_copy(update={"name": name})
            search = base.search.model_copy(update={"seed": seed, "sampler": sampler})
            config = base.model_copy(update={"search": search})
            with tempfile.TemporaryDirectory() as folder:
                run = simulate(config, count, evaluate, Path(folder))
            label = "random (any slots)" if name == "random" else f"tpe @ {count} slot{'s' if count > 1 else ''}"
            rows.setdefault(label, []).append(run)
            typer.echo(f"seed {seed}: {label} done ({time.perf_counter() - started:.0f} s)", err=True)
    metric = base.search.metric
    typer.echo(
        f"{base.benchmark} / {method}: {trials} trials, {base.training.epochs} epochs, "
        f"search seeds {search_seeds}; best {metric} after k ended trials (mean over seeds)"
    )
    ks = sorted({1, trials // 3, 2 * trials // 3, trials} - {0})
    header = " | ".join(f"k={k:<4}" for k in ks)
    typer.echo(f"{'strategy':<20} | model-based | max in flight | {header} | final ± std")
    finals: dict[str, float] = {}
    for label, runs in rows.items():
        model = statistics.fmean(sum(t.kind == MODEL for t in r) / len(r) for r in runs)
        curves = [best_so_far(r, maximize) for r in runs]
        means = [statistics.fmean(c[k - 1] for c in curves) for k in ks]
        last = [c[-1] for c in curves]
        finals[label] = statistics.fmean(last)
        spread = statistics.stdev(last) if len(last) > 1 else 0.0
        flight = max(t.in_flight for r in runs for t in r)
        typer.echo(
            f"{label:<20} | {model:>11.2f} | {flight:>13} | "
            + " | ".join(f"{m:.4f}" for m in means)
            + f" | {finals[label]:.4f} ± {spread:.4f}"
        )
    one = finals.get("tpe @ 1 slot")
    four = finals.get("tpe @ 4 slots")
    if one is not None and four is not None:
        gap = (one - four) * 100 if maximize else (four - one) * 100
        mark = "MET" if gap <= 0.5 else "MISSED"
        typer.echo(f"{mark}: TPE at 4 slots is {gap:+.2f} points below TPE at 1 slot (target ≤ 0.5)")


if __name__ == "__main__":
    typer.run(main)
