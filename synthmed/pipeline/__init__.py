"""`synthmed reproduce`: pipeline files (spec), stage kinds (kinds), the runner and report.md (report)."""
