"""Right or wrong: each answer scored against its record's expected answer (`methods`),
and the figures over a job's scores (`figures`)."""
