"""The lower layer both apps build on: settings access, the event model and its adapter,
cursors, Kafka clients, metrics and the command loop.

It imports neither ``tasks`` nor ``realtime`` (docs/architecture.md, "Dependencies";
tests/test_architecture.py keeps it so).
"""
