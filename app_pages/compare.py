"""Compare: personas side by side on one flow (or one persona across flows), differences highlighted."""

from __future__ import annotations

from ui.compare import compare_controls, show_comparison
from ui.target import current_target, page_header, sitecore_only

target = current_target()
page_header(
    "Compare",
    "Two to four personas on one flow, or one persona on two to four flows, side by side.",
    target,
)
sitecore_only(target, "Compare")
compare_controls(target)
show_comparison()
