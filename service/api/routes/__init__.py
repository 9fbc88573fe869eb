"""One module per resource: jobs, frames (of a job), health, metrics."""
