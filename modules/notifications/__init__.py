"""The notifications module: consumes ``users.created`` and keeps the welcome messages sent."""
