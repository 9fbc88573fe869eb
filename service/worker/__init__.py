"""The worker process: loads the model once, claims jobs from Redis, runs the tracker, publishes frames."""
