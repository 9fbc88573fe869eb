"""Running the tracker over media inputs (shared by `segment`, jobs and sessions) and scoring results."""
