"""`reproduce --launcher slurm --dry-run`: the seed 004 paper pipeline's jobs, tasks, dependencies, GPUs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from synthmed.pipeline.launchers.resources import stage_resources
from synthmed.pipeline.launchers.slurm import array_ranges
from synthmed.pipeline.runner import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)


def scripts(text: str) -> dict[str, tuple[str, str]]:
    """{stage: (sbatch line, script)} from the dry run's output."""
    found = {}
    for block in text.split("### sbatch ")[1:]:
        head, _, body = block.partition("\n")
        found[Path(head.split()[-1]).stem] = (head, body)
    return found


def test_paper_dry_run_has_120_classifier_tasks_after_the_synthetic_set(tmp_path, capsys):
    assert main(["experiments/nafi2024_tstr/pipeline.yaml", "--scale", "paper", "--dry-run", "--launcher", "slurm",
                 "--data.root", str(tmp_path / "X"), "--out", str(tmp_path / "out")]) == 0
    jobs = scripts(capsys.readouterr().out)
    assert list(jobs) == ["autoencoder", "ldm", "synthetic", "tstr", "trtr", "trs", "evaluate", "report"]
    total = 0
    for protocol in ("tstr", "trtr", "trs"):
        head, body = jobs[protocol]
        tasks = re.search(r"^TASKS=\((.*)\)$", body, re.M).group(1).split()
        assert len(tasks) == 40 and "#SBATCH --array=0-39" in body  # 8 archs x 5 folds
        assert {t.rsplit(":", 1)[1] for t in tasks} == {"0", "1", "2", "3", "4"}
        assert len({t.rsplit(":", 1)[0] for t in tasks}) == 8
        assert "#SBATCH --gres=gpu:1" in body
        total += len(tasks)
    assert total == 120
    assert "afterok:<synthetic>" in jobs["tstr"][0] and "afterok:<synthetic>" in jobs["trs"][0]
    assert "afterok" not in jobs["trtr"][0]  # TRTR reads only the real 20 %: it runs beside the generator
    for generator in ("autoencoder", "ldm", "synthetic"):
        head, body = jobs[generator]
        assert "#SBATCH --gres=gpu:1" in body and "#SBATCH --signal=SIGUSR1@90" in body and "--requeue" in body
    assert "afterok:<ldm>:<autoencoder>" in jobs["synthetic"][0]
    assert "afterok:<autoencoder>:<ldm>:<synthetic>:<tstr>:<trtr>:<trs>:<evaluate>" in jobs["report"][0]
    assert "--open-mode=append" in jobs["ldm"][1]
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_resources_layer_and_command_line_wins():
    block = {"default": {"cpus": 2}, "ldm": {"gpus": 1},
             "scales": {"paper": {"default": {"time": "12:00:00"}, "ldm": {"time": "48:00:00"}}}}
    ldm = stage_resources(block, "paper", "ldm", ["ldm.time=1:00:00", "partition=gpu", "tstr.mem=1G"])
    assert (ldm["cpus"], ldm["gpus"], ldm["time"], ldm["partition"], ldm["mem"]) == (2, 1, "1:00:00", "gpu", "32G")
    assert stage_resources(block, "mini", "tstr", [])["gpus"] == 0
    assert array_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
