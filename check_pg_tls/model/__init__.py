"""The shared records: states and findings, what to check, what one probe saw.

Pure data, no I/O: the probe produces these, the judgement modules read
them, and neither needs to import the other to do so.
"""

from __future__ import annotations

from .records import Login, LoginAnswer, Observation, Target, VerifyError
from .state import Check, Finding, State, worst

__all__ = [
    "Check",
    "Finding",
    "Login",
    "LoginAnswer",
    "Observation",
    "State",
    "Target",
    "VerifyError",
    "worst",
]
