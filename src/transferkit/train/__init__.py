"""The one training engine, its schedules and callbacks."""
