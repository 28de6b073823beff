"""The summary of an Optuna search (conf/hparams_search/optuna.yaml), read from its study when the search ends:
optuna.md with the best trial as a train.py command line, each parameter's importance and every trial, and two
figures (the objective trial by trial, and against each parameter). Optuna is imported only here, when a search
ends (pip install -e '.[optuna]')."""

from __future__ import annotations

import logging
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mnist_study.runs.artifacts import FAILURE_FILE

log = logging.getLogger(__name__)
SUMMARY_FILE, HISTORY_FIGURE, PARAMETERS_FIGURE = "optuna.md", "optuna_history.png", "optuna_parameters.png"
# Overrides of the search's command line that a single run of the best trial leaves out or writes itself.
SEARCH_KEYS = ("hparams_search", "optimized_metric", "model", "regularizer")
STATES = {"COMPLETE": "complete", "FAIL": "failed", "RUNNING": "stopped"}  # RUNNING: when the search was stopped


@dataclass
class Trial:
    number: int
    state: str  # COMPLETE, FAIL, RUNNING (a search stopped during it), ...
    value: float | None
    params: dict[str, Any]
    log_scale: set[str] = field(default_factory=set)  # the parameters drawn on a log scale


class OptunaSummary(Callback):
    """Hydra callback of hparams_search=optuna."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # The study's SQLite file goes into the sweep folder, which Hydra creates only when the first trial starts.
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        logging.getLogger("alembic").setLevel(logging.WARNING)  # optuna's storage narrates its schema set-up

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        import optuna

        sweeper = config.hydra.sweeper
        study = optuna.load_study(study_name=sweeper.study_name, storage=sweeper.storage)
        sweep_dir = Path(config.hydra.sweep.dir)
        path = write_summary(sweep_dir, study, config)
        print(f"optuna: {path}\ncontinue this search: {continue_command(config)}")


def trials_of(study: Any) -> list[Trial]:
    trials = []
    for t in study.get_trials(deepcopy=False):
        log_scale = {name for name, d in t.distributions.items() if on_log_scale(d)}
        trials.append(Trial(t.number, t.state.name, t.value, dict(t.params), log_scale))
    return trials


def on_log_scale(distribution: Any) -> bool:
    """A distribution drawn on a log scale: LogUniformDistribution (optuna 2), FloatDistribution(log=True) (3+)."""
    return bool(getattr(distribution, "log", False)) or "Log" in type(distribution).__name__


def importances(study: Any) -> dict[str, float] | str:
    """Each parameter's share of the objective's variation, or why there is none yet."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        return f"not computed: {len(complete)} complete trial(s), it needs 2 or more"
    # Mean decrease in impurity of a random forest (scikit-learn): optuna's default, fANOVA, fails with the
    # scikit-learn releases that install beside optuna 2.10 (its tree statistics changed shape).
    evaluator = optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)
    try:
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except (ValueError, RuntimeError) as err:  # e.g. no parameter varied
        return f"not computed: {err}"


def best_command(config: DictConfig, best: Trial) -> str:
    """train.py's command line for a single run with the best trial's parameters and the search's other options."""
    fixed = [
        str(o)
        for o in OmegaConf.to_container(config.hydra.overrides.task)  # type: ignore[union-attr]
        if str(o).split("=", 1)[0].lstrip("+~") not in (*SEARCH_KEYS, *best.params)
    ]
    groups = [f"model={config.model.name}", f"regularizer={config.regularizer.name}"]
    return shlex.join(["python", "train.py", *groups, *fixed, *(f"{k}={v}" for k, v in best.params.items())])


def continue_command(config: DictConfig) -> str:
    task = [str(o) for o in OmegaConf.to_container(config.hydra.overrides.task)]  # type: ignore[union-attr]
    return shlex.join(["python", "train.py", "-m", *task, f"hydra.sweep.dir={config.hydra.sweep.dir}"])


def short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def state_words(state: str) -> str:
    return STATES.get(state, state.lower())


def failure(sweep_dir: Path, trial: Trial) -> str:
    """The first line of the failed trial's failed.txt, if its run folder has one."""
    folder = run_folder(sweep_dir, trial.params)
    path = sweep_dir / folder / FAILURE_FILE if folder else None
    return path.read_text().splitlines()[0].replace("|", "/") if path is not None and path.is_file() else ""


def run_folder(sweep_dir: Path, params: dict[str, Any]) -> str | None:
    """The sweep's run folder whose overrides are these parameters (as the sweeper wrote them)."""
    if not params:
        return None
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml")):
        overrides = OmegaConf.load(overrides_file)
        pairs = dict(str(o).split("=", 1) for o in overrides if "=" in str(o))  # type: ignore[union-attr]
        if all(pairs.get(k) == str(v) for k, v in params.items()):
            return overrides_file.parent.parent.name
    return None


def write_summary(sweep_dir: Path, study: Any, config: DictConfig) -> Path:
    trials = trials_of(study)
    complete = [t for t in trials if t.state == "COMPLETE" and t.value is not None]
    counts = {state: sum(t.state == state for t in trials) for state in dict.fromkeys(t.state for t in trials)}
    sweeper, metric = config.hydra.sweeper, config.get("optimized_metric")
    sampler = str(sweeper.sampler._target_).rsplit(".", 1)[-1]
    lines = [
        f"# Optuna search: {sweep_dir.name}",
        "",
        f"- **Objective**: `{metric}` of each trial's run (validation accuracy of its best epoch), maximized; "
        "the test set plays no part in the choice",
        f"- **Model**: {config.model.name}, **regularizer**: {config.regularizer.name}",
        f"- **Study**: `{study.study_name}` in `{sweeper.storage}`; **sampler**: {sampler} "
        f"(seed {sweeper.sampler.get('seed')}); **pruner**: none (hydra-optuna-sweeper runs each trial as a whole "
        "job and sees only its final value)",
        f"- **Trials**: {len(trials)} (" + ", ".join(f"{n} {state_words(state)}" for state, n in counts.items()) + ")",
        "",
    ]
    if not complete:
        lines += ["No trial has completed yet.", ""]
    else:
        best = max(complete, key=lambda t: t.value)  # type: ignore[arg-type, return-value]
        folder = run_folder(sweep_dir, best.params)
        lines += [
            "## Best trial",
            "",
            f"Trial {best.number}: {metric} = {best.value:.4f}" + (f", run folder `{folder}`" if folder else ""),
            "",
            "To train it again on its own:",
            "",
            "```",
            best_command(config, best),
            "```",
            "",
        ]
        found = importances(study)
        lines += ["## Importance of each parameter", ""]
        if isinstance(found, str):
            lines += [found, ""]
        else:
            lines += [
                "The share of the objective's variation over the complete trials that each parameter explains "
                "(mean decrease in impurity of a random forest, optuna.importance):",
                "",
                *md_table(["parameter", "importance"], [[name, f"{share:.3f}"] for name, share in found.items()]),
                "",
            ]
        lines += [f"![{HISTORY_FIGURE}]({HISTORY_FIGURE})", f"![{PARAMETERS_FIGURE}]({PARAMETERS_FIGURE})", ""]
        history_figure(trials, sweep_dir / HISTORY_FIGURE, str(metric))
        parameters_figure(complete, sweep_dir / PARAMETERS_FIGURE, str(metric))
    names = list(dict.fromkeys(name for t in trials for name in t.params))
    rows = [
        [t.number, state_words(t.state), "" if t.value is None else f"{t.value:.4f}"]
        + [short(t.params.get(n, "")) for n in names]
        + [failure(sweep_dir, t) if t.state == "FAIL" else ""]
        for t in trials
    ]
    lines += ["## Trials", "", *md_table(["trial", "state", str(metric), *names, "why it failed"], rows), ""]
    path = sweep_dir / SUMMARY_FILE
    path.write_text("\n".join(lines))
    return path


def md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def history_figure(trials: list[Trial], path: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    done = [t for t in trials if t.value is not None]
    ax.plot([t.number for t in done], [t.value for t in done], "o", color="tab:blue", label="trial")
    best, running = [], -math.inf
    for t in done:
        running = max(running, t.value)  # type: ignore[type-var]
        best.append(running)
    ax.step([t.number for t in done], best, where="post", color="tab:orange", label="best so far")
    for t in trials:
        if t.state == "FAIL":
            ax.axvline(t.number, color="tab:red", alpha=0.3, lw=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="trial", ylabel=metric, title="Objective by trial (red lines: failed trials)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parameters_figure(complete: list[Trial], path: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    names = list(dict.fromkeys(name for t in complete for name in t.params))
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.2 * max(len(names), 1), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        points = [(t.params[name], t.value) for t in complete if name in t.params]
        xs = [x for x, _ in points]
        if all(isinstance(x, (int, float)) for x in xs):
            ax.plot(xs, [v for _, v in points], "o")
            if any(name in t.log_scale for t in complete):
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # over a narrow range they overlap
        else:
            labels = sorted({str(x) for x in xs})
            ax.plot([labels.index(str(x)) for x in xs], [v for _, v in points], "o")
            ax.set_xticks(range(len(labels)), labels)
        ax.set(xlabel=name, ylabel=metric)
    fig.suptitle("Objective against each parameter (complete trials)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
