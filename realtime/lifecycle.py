"""Process lifecycle shared by the ASGI server and its views: is this node draining?"""

from __future__ import annotations

import threading

# Set once on SIGTERM by `manage.py serve`; /readyz then fails so the load balancer stops
# sending new streams here while the open ones are ended over the drain window.
draining = threading.Event()
