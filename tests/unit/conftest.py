"""Unit tests: pure-Python pipeline stages only (no network, no database, no Airflow).

The root ``tests/conftest.py`` puts ``plugins/`` on ``sys.path`` too; this keeps the
unit tests runnable on their own (``pytest tests/unit``, or with ``--confcutdir``).
"""

from __future__ import annotations

import sys
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))
