"""Progress (issue 16 item 1): reproduce's stage line with budget and ETA; a fit's plain progress line."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from lightning_modules.callbacks.progress_line import ProgressLine, total_steps
from synthmed.pipeline.stage_progress import stage_header, step_budget

LDM = ["fit", "--trainer.max_epochs", "100000", "--trainer.max_steps", "700"]


def test_stage_header_budget_and_eta():
    assert step_budget(LDM) == (700, "700 steps")
    assert step_budget(["cv", "--folds", "2", "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "4"]) == (
        24, "3 epochs x 4 batches x 2 folds")
    assert step_budget(["make-phantoms", "x"]) == (None, "")
    assert stage_header(4, 9, "ldm", LDM, 75, {}) == "=== stage 4/9 ldm (75 s elapsed, budget 700 steps, no ETA)"
    earlier = {"argv": LDM[:-1] + ["350"], "seconds": 60.0, "status": "pending"}
    assert "ETA 2 min (scaled from an earlier run)" in stage_header(4, 9, "ldm", LDM, 0, earlier)
    assert "ETA 60 s (its earlier run)" in stage_header(4, 9, "ldm", LDM, 0, {**earlier, "argv": LDM})
    assert "no ETA" in stage_header(4, 9, "ldm", LDM, 0, {**earlier, "argv": LDM, "status": "failed"})


def fake_trainer(step: int, **overrides):
    values = dict(global_step=step, max_steps=-1, max_epochs=10, num_training_batches=20, accumulate_grad_batches=1,
                  current_epoch=step // 20, callback_metrics={"train/loss": torch.tensor(0.25)},
                  progress_bar_callback=None)
    values.update(overrides)
    return SimpleNamespace(**values)


def test_progress_line_text_and_eta():
    assert total_steps(fake_trainer(0)) == 200
    assert total_steps(fake_trainer(0, max_steps=700)) == 700
    assert total_steps(fake_trainer(0, num_training_batches=float("inf"))) is None
    line = ProgressLine().line(fake_trainer(50), elapsed=30.0)
    assert line == "train: step 50/200 (25 %), epoch 2, 30 s elapsed, about 2 min left, train/loss 0.25"
    unknown = ProgressLine().line(fake_trainer(5, max_epochs=-1), elapsed=10.0)
    assert "no ETA" in unknown and "step 5," in unknown


def test_progress_line_prints_every_interval_only_without_a_bar(caplog, monkeypatch):
    import lightning_modules.callbacks.progress_line as module

    clock = iter([0.0, 10.0, 31.0, 40.0, 62.0, 100.0])
    monkeypatch.setattr(module.time, "monotonic", lambda: next(clock))
    callback = ProgressLine(every_s=30)
    trainer = fake_trainer(0)
    callback.on_train_start(trainer, None)
    printed = []
    monkeypatch.setattr(module, "rank_zero_info", printed.append)
    for step in (1, 2, 3, 4):
        trainer.global_step = step
        callback.on_train_batch_end(trainer, None, None, None, step)
    assert [p.split(",")[0] for p in printed] == ["train: step 2/200 (1 %)", "train: step 4/200 (2 %)"]
    trainer.progress_bar_callback = object()  # on a terminal the bar shows progress instead
    callback.on_train_batch_end(trainer, None, None, None, 5)
    assert len(printed) == 2


def test_progress_helper_prints_plain_lines_to_a_log(capsys, monkeypatch):
    import synthmed.progress as module

    clock = iter([0.0, 5.0, 31.0, 40.0])
    monkeypatch.setattr(module.time, "monotonic", lambda: next(clock))
    assert list(module.progress(range(3), desc="LIME", every_s=30)) == [0, 1, 2]  # stderr is captured: no TTY
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["LIME: 2/3 (67 %), 31 s elapsed, about 16 s left"]
