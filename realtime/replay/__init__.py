"""Replay: everything that re-sends events a client missed.

- ``resume``: where a (re)connecting stream starts, and filling holes (hot store first);
- ``kafka``: the process's one Kafka reader for what the hot store no longer holds;
- ``selection`` and ``events``: ``manage.py replay_events``.
"""
