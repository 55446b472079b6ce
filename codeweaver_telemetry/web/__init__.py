# SPDX-License-Identifier: MIT OR Apache-2.0
"""The local dashboard and web API (the ``[web]`` extra: ``pip install
'codeweaver-telemetry[web]'``, which adds Starlette and uvicorn).

- :func:`telemetry_router`: the web API as an ASGI app, for a Starlette or FastAPI app to
  mount where it likes (``app.mount("/telemetry", telemetry_router())``).
- :func:`start_dashboard`: the API and a dashboard page on 127.0.0.1, behind a random token
  (what ``codeweaver-telemetry serve`` runs).

Nothing here starts a telemetry client or sends anything; the core library never imports
this package.
"""

from __future__ import annotations

from codeweaver_telemetry.web._api import PAGE_LIMIT_MAX, telemetry_router
from codeweaver_telemetry.web._dashboard import NEVER_COLLECTED
from codeweaver_telemetry.web._server import (
    TOKEN_HEADER,
    Dashboard,
    dashboard_app,
    start_dashboard,
)

__all__ = [
    "NEVER_COLLECTED",
    "PAGE_LIMIT_MAX",
    "TOKEN_HEADER",
    "Dashboard",
    "dashboard_app",
    "start_dashboard",
    "telemetry_router",
]
