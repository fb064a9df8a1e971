"""Stage kinds: one class per `verb:` of a pipeline stage, found through `STAGE_KINDS`.

A kind owns everything the runner and the report need to know about its stages: the run
directory (`dir` is always `<out>/<stage>/`), the completion marker (`is_complete`), the outputs a
later stage may reference as `${stages.<name>.<output>}` (`outputs`, `output`), the `synthmed ...`
argument list (`argv`), and the resume rule (`resumes_in_place`: an incomplete directory is kept
and the verb resumes in it, otherwise it is moved aside to `<stage>.incomplete-<time>`).

Adding a stage kind = one subclass of `StageKind` and one line in `STAGE_KINDS` (the registry
pattern of timm's `models/_registry.py` and MONAI's scheduler registry); the pipeline loader,
runner and report need no edit.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from synthmed import runs
from synthmed.pipeline.errors import PipelineError

if TYPE_CHECKING:  # only for annotations: spec imports this module for the registry
    import pandas as pd

    from synthmed.pipeline.spec import Stage

CHECKPOINT_OUTPUTS = ("best_ckpt", "last_ckpt")


class StageKind:
    """Base of the stage kinds, bound to one stage of one pipeline run (`out`: the pipeline's folder).

    Subclasses set `verb` and `outputs` and override what differs; `dir` is `<out>/<stage>/`.
    """

    verb: ClassVar[str] = ""
    outputs: ClassVar[tuple[str, ...]] = ("dir", "run_dir", "out")
    takes_config: ClassVar[bool] = False  # `config:` entries (YAMLs / inline overlays) are passed as --config
    resumes_in_place: ClassVar[bool] = False
    classifier_row: ClassVar[bool] = False  # report.md: its `row:` is a line of the classifier table

    def __init__(self, out: Path, stage: Stage):
        self.out, self.stage = Path(out), stage

    @property
    def dir(self) -> Path:
        return self.out / self.stage.name

    @property
    def run_dir(self) -> Path:
        return self.dir

    @property
    def out_dir(self) -> Path:
        """What `${stages.<name>.out}` names: the folder of the stage's product."""
        return self.run_dir

    def is_complete(self) -> bool:
        raise NotImplementedError

    def argv(self, configs: list[str], args: list[str]) -> list[str]:
        """`synthmed <verb> ...` for this stage: its configs (as --config pairs) and args, plus fixed locations."""
        raise NotImplementedError

    def output(self, name: str) -> str:
        """The path behind `${stages.<stage>.<name>}` (called once the stage is complete)."""
        if name == "dir":
            return str(self.dir)
        if name == "run_dir":
            return str(self.run_dir)
        if name == "out":
            return str(self.out_dir)
        try:
            return str(runs.find_checkpoint(self.checkpoint_run(), last=name == "last_ckpt"))
        except runs.RunDirError as exc:
            why = ("or the stage's ModelCheckpoint needs save_last: true" if name == "last_ckpt"
                   else "or give the stage a ModelCheckpoint callback")
            raise PipelineError(f"{exc} (deleted since? then delete the stage's folder to rerun it; {why})") from exc

    def checkpoint_run(self) -> Path:
        """The run directory whose checkpoints `best_ckpt` / `last_ckpt` name."""
        return self.run_dir

    def prepare_rerun(self) -> Path | None:
        """Apply the resume rule before the stage (re)runs; returns where an incomplete directory went."""
        if self.resumes_in_place or not self.dir.exists():
            return None
        return runs.move_aside(self.dir)

    # ---- launcher hooks (synthmed/pipeline/launchers/): what one scheduler array task runs ----------
    def array_tasks(self, argv: list[str]) -> list[int | None]:
        """The stage's array tasks: None = the whole stage is one task; ints = one task each (cv folds)."""
        return [None]

    def task_complete(self, task: int | None) -> bool:
        """Whether one array task's part is finished (the whole stage for task None)."""
        return self.is_complete()

    def task_argv(self, argv: list[str], task: int | None) -> list[str]:
        """The command of one array task, from the stage's full `argv`."""
        return argv


class TrainerStageKind(StageKind):
    """fit / test / predict: a LightningCLI run in `<stage>/run/`, complete when it wrote metrics.json."""

    takes_config = True

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    def is_complete(self) -> bool:
        return runs.is_finished(self.run_dir)

    def argv(self, configs: list[str], args: list[str]) -> list[str]:
        return [self.verb, *configs, *args, "--logs_root", str(self.out), "--experiment", self.stage.name,
                "--run_version", "run"]

    def hpc_checkpoint(self) -> Path | None:
        """The newest `hpc_ckpt_N.ckpt` Lightning saved in the run on SIGUSR1 (preemption / time limit)."""
        found = sorted(self.run_dir.glob("hpc_ckpt_*.ckpt"), key=lambda p: p.stat().st_mtime)
        return found[-1] if found and self.verb == "fit" and not self.is_complete() else None

    def prepare_rerun(self) -> Path | None:
        if self.hpc_checkpoint() is not None:  # a preempted fit continues from Lightning's save
            return None
        return super().prepare_rerun()

    def task_argv(self, argv: list[str], task: int | None) -> list[str]:
        ckpt = self.hpc_checkpoint()
        return [*argv, "--ckpt_path", str(ckpt)] if ckpt is not None else argv

    def results(self) -> tuple[pd.DataFrame, Path, str]:
        """(one row of metrics per run, the file they come from, how many runs) for report.md."""
        import pandas as pd

        metrics = runs.read_metrics(self.run_dir)
        table = pd.DataFrame([{k: v for k, v in metrics.items() if not k.startswith("_")}])
        return table, self.run_dir / runs.METRICS_FILE, "1 run (no spread)"


class FitKind(TrainerStageKind):
    """`synthmed fit`: offers its run's best and last checkpoint."""

    verb = "fit"
    outputs = ("dir", "run_dir", *CHECKPOINT_OUTPUTS)
    classifier_row = True


class TestKind(TrainerStageKind):
    """`synthmed test`: metrics of a checkpoint on the test split."""

    verb = "test"
    outputs = ("dir", "run_dir")
    classifier_row = True


class PredictKind(TrainerStageKind):
    """`synthmed predict`: a synthetic ImageFolder tree in `<stage>/images` (resumed in place: the
    writer skips images already written)."""

    verb = "predict"
    outputs = ("dir", "run_dir", "out")
    resumes_in_place = True
    images_subdir = "images"

    @property
    def out_dir(self) -> Path:
        return self.dir / self.images_subdir

    def is_complete(self) -> bool:
        return super().is_complete() and (self.out_dir / "metadata.csv").is_file()

    def argv(self, configs: list[str], args: list[str]) -> list[str]:
        return [*super().argv(configs, args), "--data.init_args.output_dir", str(self.out_dir)]


class CvKind(StageKind):
    """`synthmed cv`: folds in `<stage>/cv/fold_<k>/`, complete with cv_summary.csv; cv itself reuses
    finished folds, so it resumes in place. Checkpoints are the best fold's (lowest val/loss)."""

    verb = "cv"
    outputs = ("dir", "run_dir", *CHECKPOINT_OUTPUTS)
    takes_config = True
    resumes_in_place = True
    classifier_row = True

    @property
    def run_dir(self) -> Path:
        return self.dir / "cv"

    def is_complete(self) -> bool:
        return (self.run_dir / "cv_summary.csv").is_file()

    def argv(self, configs: list[str], args: list[str]) -> list[str]:
        return ["cv", *configs, *args, "--logs_root", str(self.out), "--experiment", self.stage.name, "--name", "cv"]

    def checkpoint_run(self) -> Path:
        return runs.best_fold_run(self.run_dir)

    def array_tasks(self, argv: list[str]) -> list[int | None]:
        folds = next((int(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a == "--folds"), 5)  # cv's default
        return list(range(folds))

    def task_complete(self, task: int | None) -> bool:
        return self.is_complete() if task is None else runs.is_finished(self.run_dir / f"fold_{task}")

    def task_argv(self, argv: list[str], task: int | None) -> list[str]:
        return argv if task is None else [*argv, "--fold", str(task)]  # one fold; a later plain run summarises

    def results(self) -> tuple[pd.DataFrame, Path, str]:
        import pandas as pd

        table = pd.read_csv(self.run_dir / "cv_summary.csv")
        folds = table[~table["fold"].astype(str).isin(["mean", "sd"])]
        return folds, self.run_dir / "cv_summary.csv", f"{len(folds)} folds"


class EvaluateKind(StageKind):
    """`synthmed evaluate`: evaluation.json in `<stage>/` (its `row:` is a line of the metric table)."""

    verb = "evaluate"

    def is_complete(self) -> bool:
        return (self.run_dir / "evaluation.json").is_file()

    def argv(self, configs: list[str], args: list[str]) -> list[str]:
        return ["evaluate", *args, "--out", str(self.dir)]


class MakePhantomsKind(StageKind):
    """`synthmed make-phantoms`: a phantom tree in `<stage>/`, renamed into place when finished."""

    verb = "make-phantoms"
    resumes_in_place = True  # the tree appears atomically: an existing folder is a finished one

    def is_complete(self) -> bool:
        return self.dir.is_dir() and any(self.dir.iterdir())

    def argv(self, configs: list[str], args: list[str]) -> list[str]:
        return ["make-phantoms", str(self.dir), *args]


class ExplainKind(StageKind):
    """`synthmed explain`: LIME on a stage's checkpoint (`args: [--ckpt, "${stages.<fit>.best_ckpt}", ...]`),
    on the images of that run's split_manifest.csv unless the args give --data-root; complete when
    `<stage>/explanations.json` exists (an incomplete folder is moved aside: explain never reuses one)."""

    verb = "explain"

    def is_complete(self) -> bool:
        return (self.dir / "explanations.json").is_file()

    def argv(self, configs: list[str], args: list[str]) -> list[str]:
        return ["explain", *args, "--out", str(self.dir)]


# verb -> kind; a new stage kind is one class above and one line here.
STAGE_KINDS: dict[str, type[StageKind]] = {
    "fit": FitKind,
    "test": TestKind,
    "predict": PredictKind,
    "cv": CvKind,
    "evaluate": EvaluateKind,
    "make-phantoms": MakePhantomsKind,
    "explain": ExplainKind,
}


def kind_of(out: Path, stage: Stage) -> StageKind:
    """The stage's kind, bound to the pipeline folder `out`."""
    return STAGE_KINDS[stage.verb](out, stage)


def run_dir(out: Path, stage: Stage) -> Path:
    return kind_of(out, stage).run_dir

