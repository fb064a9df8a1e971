"""SynthmedCLI: LightningCLI with synthmed's defaults (used for fit/validate/test/predict)."""

from __future__ import annotations

import importlib
import inspect
import warnings
from pathlib import Path
from typing import Any

from synthmed.offline import configure_offline

configure_offline()

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningCLI

from lightning_modules.callbacks.progress_line import ProgressLine
from lightning_modules.callbacks.random_state import ResumeRandomState
from lightning_modules.checkpoint_io import CheckpointError, check_checkpoint_for_model
from lightning_modules.optim import upgrade_legacy_hparams
from synthmed.lightning_output import quiet_lightning_output
from synthmed.runs import RunRecorder

# Data attributes that are passed to the model when its __init__ takes a parameter of that name,
# so a YAML never states them twice (see `_link_data_to_model`).
DATA_TO_MODEL_LINKS = {
    "num_classes": "num_classes",
    "channels": "in_channels",
    "image_size": "image_size",
    "class_names": "class_names",
}

def _resolve_class(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def silence_checkpoints_in_fast_dev_run(trainer: Trainer) -> None:
    """Make every ModelCheckpoint write nothing, as `fast_dev_run` promises.

    Lightning 2.6.6 skips the periodic saves under fast_dev_run, but ModelCheckpoint.on_train_end
    still writes `last.ckpt` when `save_last` is on, into `<default_root_dir>/checkpoints`
    because fast_dev_run swaps the logger for a DummyLogger: a smoke run from the repo root
    left a 1.8 GB checkpoint per run in ./checkpoints and filled CI's disk.
    """
    for callback in trainer.checkpoint_callbacks:
        callback.save_last = False


class SynthmedCLI(LightningCLI):
    """LightningCLI with synthmed's defaults: omegaconf YAMLs, run directories, data->model links.

    Extra top-level options: `experiment` (folder under logs/), `test_after_fit` (run `test` on
    the best checkpoint when the datamodule has a test split; default true).

    Resuming: `fit --ckpt_path last` (or a checkpoint path inside a run directory of the same
    experiment) continues in that run directory instead of opening a new version_N; the
    resolved config of the resumed part goes to `config_resume_<k>.yaml` beside the original
    `config.yaml`, which is kept. Every `fit` gets `ResumeRandomState`, so the resumed run
    draws the same noise as an uninterrupted one.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("model_class", LightningModule)
        kwargs.setdefault("datamodule_class", LightningDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("parser_kwargs", {"parser_mode": "omegaconf"})
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        self.recorder: RunRecorder | None = None
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--experiment", type=str, default="default",
                            help="Run directory is logs/<experiment>/version_N")
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="After fit, test the best checkpoint if the data has a test split")
        parser.add_argument("--logs_root", type=str, default="logs", help="Root folder of run directories")
        parser.add_argument("--run_version", type=str | None, default=None,
                            help="Fixed version sub-folder (used by cv / sweeps); default version_N")

    def _parse_ckpt_path(self) -> None:
        """Check `--ckpt_path` first: no code from the file, and written by this config's kind of model."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path:
            model_cfg = self.config[subcommand].get("model")
            class_path = model_cfg.get("class_path") if model_cfg is not None and hasattr(model_cfg, "get") else None
            try:
                checkpoint = check_checkpoint_for_model(ckpt_path, _resolve_class(class_path) if class_path else None)
            except CheckpointError as err:
                raise SystemExit(f"synthmed {subcommand}: {err}") from None
            if checkpoint is not None and upgrade_legacy_hparams(checkpoint):
                # an older synthmed checkpoint (lr/warmup_steps hyper-parameters): what Lightning's
                # _parse_ckpt_path does, with the upgraded hyper-parameters
                hparams = dict(checkpoint["hyper_parameters"])
                hparams.pop("_instantiator", None)
                if "_class_path" in hparams:
                    hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
                self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
                return
        super()._parse_ckpt_path()

    # ---- before instantiation: logger + data->model links -----------------------------------
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        if self.subcommand == "fit" and config.get("ckpt_path"):
            self._continue_run_directory(config)
        default_logger = trainer.logger in (None, True)
        if default_logger:
            trainer.logger = {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": config.logs_root, "name": config.experiment,
                              "version": config.run_version, "default_hp_metric": False},
            }
        self._link_data_to_model(config)
        self._skip_initial_weights_when_resuming(config)
        if default_logger and config.run_version is not None:
            if trainer.get("default_root_dir") is None:  # Lightning's SLURM hpc_ckpt_N.ckpt goes here (else: cwd)
                trainer.default_root_dir = str(Path(config.logs_root) / str(config.experiment) / str(config.run_version))
            self._refuse_a_used_run_directory(config)  # after: the stored config.yaml holds default_root_dir too

    def _refuse_a_used_run_directory(self, config) -> None:
        """A fixed `run_version` whose directory already holds a run is used again only to resume it.

        A second fit there mixed two runs: config.yaml and metrics.json were replaced while
        checkpoints/last.ckpt stayed the first run's (the new one went to last-v1.ckpt). So `fit` is
        refused unless it resumes (`--ckpt_path last` or a checkpoint inside the directory), and
        validate / test / predict unless their resolved config equals the stored config.yaml (a rerun
        of the same request, e.g. a killed `predict` continued). Nothing is written before this check.
        """
        run_dir = Path(config.logs_root) / str(config.experiment) / str(config.run_version)
        held = previous_run_files(run_dir)
        if not held:
            return
        if self.subcommand == "fit":
            if config.get("ckpt_path") and resumes_run(str(config.ckpt_path), run_dir):
                return
            why = "a new fit there would mix with it (its checkpoints/last.ckpt would stay the old run's)"
        else:
            if self._same_config_as_stored(config, run_dir / "config.yaml"):
                return
            why = f"this {self.subcommand} has another config than its config.yaml"
        raise RunDirectoryInUse(
            f"run directory {run_dir} already holds a run ({', '.join(held)}); {why}, so nothing was started "
            f"and nothing in it was changed. To continue that run: the same command with --ckpt_path last. "
            f"To keep it and start another: --run_version <new name> (or --run_version null for the next "
            f"{Path(config.logs_root) / str(config.experiment)}/version_N), or --experiment <name>. "
            f"To replace it: move {run_dir} away first.")

    def _same_config_as_stored(self, config, stored: Path) -> bool:
        if not stored.is_file():
            return False
        try:
            import yaml

            now = yaml.safe_load(self._parser(self.subcommand).dump(config, skip_none=False))
            return now == yaml.safe_load(stored.read_text())
        except Exception:  # noqa: BLE001 - a config that cannot be compared counts as different
            return False

    def _continue_run_directory(self, config) -> None:
        """A resumed fit continues in the checkpoint's run directory and keeps its config.yaml."""
        if config.run_version is None and config.trainer.logger in (None, True):
            run_dir = resumed_run_directory(str(config.ckpt_path), Path(config.logs_root) / str(config.experiment))
            if run_dir is not None:
                config.run_version = run_dir.name
        if config.run_version is not None:
            run_dir = Path(config.logs_root) / str(config.experiment) / str(config.run_version)
            if (run_dir / "config.yaml").exists():
                k = 1
                while (run_dir / f"config_resume_{k}.yaml").exists():
                    k += 1
                self.save_config_kwargs = {**self.save_config_kwargs, "config_filename": f"config_resume_{k}.yaml"}

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        present = config.get("callbacks") or []
        present = [*(present if isinstance(present, list) else [present]), *callbacks]
        if self.subcommand == "fit":
            callbacks = [*callbacks, *default_fit_callbacks(present, logger=config.get("logger"))]
        trainer = super()._instantiate_trainer(config, callbacks)
        if trainer.fast_dev_run:
            silence_checkpoints_in_fast_dev_run(trainer)
        return trainer

    def parse_arguments(self, parser, args) -> None:
        """As LightningCLI, but `--print_config` prints the config with the data->model links resolved.

        jsonargparse prints it while parsing, before `before_instantiate_classes` links e.g. the data's
        `num_classes` into the model, so a 3-class run showed the model's default `num_classes: 2`.
        The flag is taken out, the arguments parsed, the links applied, then the config printed.
        """
        flags = [a for a in (args or []) if isinstance(a, str) and (a == "--print_config" or
                                                                     a.startswith("--print_config="))]
        if not flags or not isinstance(args, list):
            return super().parse_arguments(parser, args)
        super().parse_arguments(parser, [a for a in args if a not in flags])
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        self._link_data_to_model(config)
        skip_null = any(f.endswith("skip_null") for f in flags)
        print(self._parser(subcommand).dump(config, skip_none=skip_null), end="")
        raise SystemExit(0)

    @staticmethod
    def _skip_initial_weights_when_resuming(config) -> None:
        """With --ckpt_path the checkpoint supplies the weights: do not load `pretrained` ones
        (a hub id offline, or a weights file deleted since training, would fail needlessly)."""
        init_args = config.model.get("init_args") if config.get("model") else None
        if config.get("ckpt_path") and init_args is not None and init_args.get("pretrained"):
            init_args["pretrained"] = False

    def _link_data_to_model(self, config) -> None:
        data_cfg, model_cfg = config.data, config.model
        if not (data_cfg and model_cfg and data_cfg.get("class_path") and model_cfg.get("class_path")):
            return
        data_cls = _resolve_class(data_cfg.class_path)
        data = data_cls(**dict(data_cfg.get("init_args") or {}))
        model_params = inspect.signature(_resolve_class(model_cfg.class_path).__init__).parameters
        for data_attr, model_param in DATA_TO_MODEL_LINKS.items():
            if model_param in model_params and hasattr(data, data_attr):
                value = getattr(data, data_attr)
                model_cfg.init_args[model_param] = list(value) if isinstance(value, (list, tuple)) else value

    # ---- after each verb ---------------------------------------------------------------------
    def _recorder(self) -> RunRecorder:
        if self.recorder is None:
            self.recorder = RunRecorder(self.trainer)
        return self.recorder

    def after_fit(self) -> None:
        rec = self._recorder()
        rec.collect(self.trainer.callback_metrics)
        config = self.config[self.subcommand]
        if self.trainer.ckpt_path:
            rec.extra["resumed_from"] = str(self.trainer.ckpt_path)
        has_test = getattr(self.datamodule, "has_split", lambda s: False)("test")
        if config.test_after_fit and has_test and not self.trainer.fast_dev_run:
            ckpt = self.trainer.checkpoint_callback
            best = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
            rec.collect(self.trainer.callback_metrics)
            rec.extra["tested_checkpoint"] = best or "last weights in memory"
        log_final_hparams(self.trainer, self.config[self.subcommand], rec.metrics)
        rec.finish()

    def _after_eval(self) -> None:
        rec = self._recorder()
        rec.collect(self.trainer.callback_metrics)
        rec.finish()

    after_validate = _after_eval
    after_test = _after_eval

    def before_predict(self) -> None:
        # a synthetic-set DataModule records the generator checkpoint's hash at setup, before Lightning
        # itself knows `--ckpt_path` (datamodules.synthetic_set_record)
        if hasattr(self.datamodule, "checkpoint_path"):
            self.datamodule.checkpoint_path = self.config[self.subcommand].get("ckpt_path")

    def after_predict(self) -> None:
        self._recorder().finish()


class RunDirectoryInUse(RuntimeError):
    """A fixed run_version's directory holds another run; the message names it and the ways on."""


# What a synthmed / Lightning run leaves in its directory. `sweep` writes overrides.json and sweep.log
# there before the run starts, so those do not count.
RUN_MARKERS = ("config.yaml", "metrics.json", "hparams.yaml", "split_manifest.csv", "events.out.tfevents.*",
               "checkpoints/*")


def previous_run_files(run_dir: Path, limit: int = 6) -> list[str]:
    """Names of the files of an earlier run in `run_dir` ([] when there is none)."""
    if not run_dir.is_dir():
        return []
    found = sorted({p.relative_to(run_dir).as_posix() for pattern in RUN_MARKERS for p in run_dir.glob(pattern)})
    return found[:limit] + ([f"... {len(found)} files"] if len(found) > limit else [])


def resumes_run(ckpt_path: str, run_dir: Path) -> bool:
    """True when `fit --ckpt_path` continues the run in `run_dir` ("last", or a file inside it)."""
    if ckpt_path == "last":
        return True
    return Path(ckpt_path).resolve().is_relative_to(run_dir.resolve())


def resumed_run_directory(ckpt_path: str, experiment_dir: Path) -> Path | None:
    """The run directory under `experiment_dir` that a `fit --ckpt_path` resumes, or None.

    "last" is the run whose `checkpoints/last*.ckpt` was written most recently (the one Lightning
    would pick); a path counts when it lies in `<experiment_dir>/<version>/checkpoints/`. None
    (a fresh version_N) for other experiments' checkpoints and when nothing is there to resume.
    """
    if ckpt_path == "last":
        found = [p for p in experiment_dir.glob("*/checkpoints/last*.ckpt") if p.is_file()]
        return max(found, key=lambda p: p.stat().st_mtime).parent.parent if found else None
    path = Path(ckpt_path)
    if path.parent.name != "checkpoints" or not path.is_file():
        return None
    run_dir = path.resolve().parent.parent
    return run_dir if run_dir.parent == experiment_dir.resolve() else None


def default_fit_callbacks(present: list, logger: Any) -> list[Callback]:
    """What every `fit` gets unless its config has one already: ResumeRandomState, ProgressLine
    (a line every 30 s when no progress bar shows) and, with a logger, LearningRateMonitor."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    added: list[Callback] = []
    if not any(isinstance(c, ResumeRandomState) for c in present):
        added.append(ResumeRandomState())
    if not any(isinstance(c, ProgressLine) for c in present):
        added.append(ProgressLine())
    if logger not in (False, None) and not any(isinstance(c, LearningRateMonitor) for c in present):
        added.append(LearningRateMonitor(logging_interval="step"))
    return added


def log_final_hparams(trainer: Trainer, config, metrics: dict[str, Any]) -> None:
    """Give TensorBoard's HParams tab this run's options and final metrics (Lightning logs the
    hyper-parameters at the start, without metrics, so the tab stayed empty)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    numbers = {k: float(v) for k, v in metrics.items()
               if not k.startswith("_") and isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not numbers or trainer.fast_dev_run:
        return
    params: dict[str, Any] = {}
    for part in ("model", "data"):
        section = config.get(part) if config is not None else None
        init_args = section.get("init_args") if section is not None and hasattr(section, "get") else None
        if section is not None and hasattr(section, "get") and section.get("class_path"):
            params[f"{part}/class"] = str(section.get("class_path")).rsplit(".", 1)[-1]
        for key, value in dict(init_args or {}).items():
            if isinstance(value, (int, float, str, bool)):
                params[f"{part}/{key}"] = value
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics={f"final/{k}": v for k, v in numbers.items()})
            logger.experiment.flush()  # the writer was closed at the end of fit; this reopened it


def run_trainer_verb(argv: list[str]) -> SynthmedCLI:
    """Run a LightningCLI verb in-process (used by `main` and by cv/sweep/reproduce)."""
    with warnings.catch_warnings():
        quiet_lightning_output()  # Lightning lines that do not apply here, each with its reason
        # `args` is the intended way to run in-process; Lightning warns whenever sys.argv is also set
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return SynthmedCLI(args=argv)
