"""Small helpers shared by the app, the worker and the CLI."""
