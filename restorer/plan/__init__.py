"""Plans: pydantic models, loading with located errors, secret references."""
