"""``[core] hostname_callable`` for the Celery test's workers: each reports the name it was started with.

Both workers run on this machine, so the default (the FQDN) would be the same for both; a task
instance's ``hostname`` then says which worker ran it.
"""

from __future__ import annotations

import os

ENV_VAR = "E2E_CELERY_WORKER_NAME"


def hostname() -> str:
    """The worker's name from the environment it was started with."""
    return os.environ[ENV_VAR]
