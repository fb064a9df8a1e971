"""Where `synthmed reproduce --launcher local|slurm` runs a pipeline's stages (local: runner.run_pipeline)."""
