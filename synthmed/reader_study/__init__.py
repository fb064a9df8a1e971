"""Blinded reader study (seed 001): create a study file, serve it, report on it.

Two modes (``db.STUDY_MODES``): real-vs-synthetic (default; balanced real and synthetic
images) and synthetic-only, seed 001's own protocol (only synthetic images, answers real /
phony / unclear with notes, a background per reader in ``background.py``; its report is
``report_synthetic_only.py``, with the paper's counts from ``paper_counts.py``).

The three steps share one SQLite file (tables in ``db.py``):

* ``create``  draws a balanced, shuffled image set from a real and a synthetic ImageFolder
  tree (``create.py``) and stores each image, re-encoded without any trace of its source
  (``blinding.py``), inside the file.
* ``serve``   a small FastAPI page on which readers call each image Real / Fake / Unclear
  (``app.py``; HTML in ``pages.py``, CSS/JS in ``assets.py``). Every vote is committed the
  moment it is cast.
* ``report``  per-reader / per-class counts, accuracy, sensitivity, specificity, kappa,
  consensus, notes, a bar chart and a contact sheet (``stats.py`` computes, ``report.py``
  writes).

``demo.py`` makes phantom trees to try it on. Command line (``cli.py``):
``synthmed reader-study {create,serve,report} ...``.
"""
