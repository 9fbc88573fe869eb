"""Running the service: `serve` (all in one), the process supervisor, the embedded Redis, health checks."""
