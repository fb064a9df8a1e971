"""A `synthmed fit|validate|test|predict` run as a value: its arguments, typed extra options, resolved config.

cv and sweep used to re-parse LightningCLI options by hand to learn which `--config` wins, where
`--logs_root` points or how many devices a run gets; the rules of jsonargparse (config stacking,
`--a.b=v` and `--a.b v`, omegaconf interpolation, class_path defaults) are not worth copying.
They now build a `TrainerRun` and ask the real parser for the resolved config (`resolve`: the
SynthmedCLI parser, nothing instantiated, no seed set), and add options as typed values
(`with_options`) that become arguments in one place (`option_args`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping


def format_value(value: Any) -> str:
    """A value as a command-line string LightningCLI parses back to the same value."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)  # true / false / null
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Path):
        return str(value)
    return json.dumps(value, separators=(",", ":"))  # lists / dicts: JSON is valid YAML flow


def option_args(options: Mapping[str, Any]) -> list[str]:
    """`{"model.arch": "vgg16", "trainer.max_epochs": 3}` -> `["--model.arch", "vgg16", "--trainer.max_epochs", "3"]`."""
    args: list[str] = []
    for key, value in options.items():
        args += [f"--{key}", format_value(value)]
    return args


@dataclass(frozen=True)
class TrainerRun:
    """One LightningCLI run: `verb` and its arguments (configs and overrides, later ones win)."""

    verb: str
    args: tuple[str, ...] = ()

    @classmethod
    def from_configs(cls, verb: str, configs: list[str], options: Mapping[str, Any] | None = None) -> TrainerRun:
        return cls(verb, tuple(a for c in configs for a in ("--config", str(c)))).with_options(options or {})

    def with_args(self, args: list[str]) -> TrainerRun:
        return replace(self, args=(*self.args, *args))

    def with_options(self, options: Mapping[str, Any]) -> TrainerRun:
        """This run with `options` (dotted keys) set; they come last, so they win."""
        return self.with_args(option_args(options))

    @property
    def argv(self) -> list[str]:
        return [self.verb, *self.args]

    def resolve(self):
        """The run's resolved config (a jsonargparse Namespace of the verb) as the CLI would build it."""
        return resolve_config(self.argv)

    def run(self):
        """Run it in this process; returns the SynthmedCLI (its `recorder` holds run_dir and metrics)."""
        from synthmed.lightning_cli import run_trainer_verb

        return run_trainer_verb(self.argv)


def resolve_config(argv: list[str]):
    """Parse `argv` (`[verb, ...]`) with the SynthmedCLI parser; instantiate nothing, seed nothing.

    Links that need the DataModule instantiated (num_classes, class_names) and the default logger
    are not filled in: the result is the config as given, after stacking, defaults and validation.
    Bad options exit with the CLI's own message (SystemExit 2), as `synthmed fit` would.
    """
    from synthmed.lightning_cli import SynthmedCLI

    class ConfigOnly(SynthmedCLI):
        """SynthmedCLI that stops after parsing."""

        def _set_seed(self) -> None:
            pass

        def before_instantiate_classes(self) -> None:
            pass

        def instantiate_classes(self) -> None:
            pass

        def after_instantiate_classes(self) -> None:
            pass

        def _run_subcommand(self, subcommand: str) -> None:
            pass

    with warnings.catch_warnings():  # as run_trainer_verb: in-process `args` is intended, sys.argv is ignored
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = ConfigOnly(args=list(argv))
    return cli.config[cli.subcommand]


def config_dict(config) -> dict[str, Any]:
    """A resolved config as plain JSON-able data, without the `config` key (the YAML paths, not their content)."""
    data = config.clone().as_dict() if hasattr(config, "as_dict") else dict(config)
    data.pop("config", None)
    return json.loads(json.dumps(data, default=str))


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}` (lists are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
