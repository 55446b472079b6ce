# SPDX-License-Identifier: MIT OR Apache-2.0
"""``python -m codeweaver_telemetry``: the ``codeweaver-telemetry`` command line."""

from __future__ import annotations

import sys

from codeweaver_telemetry.cli import main

if __name__ == "__main__":
    sys.exit(main())
