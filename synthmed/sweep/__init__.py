"""`synthmed sweep` / `sweep-summary`: a grid of override sets (grid), run locally (local) or written
as a SLURM array job (slurm), launched by cli, tabulated by summary."""
