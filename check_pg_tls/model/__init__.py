"""The shared records, in one home: states and findings, targets and what was
seen of them, how to check.

Pure data, no I/O: the network modules produce records, the judgement
modules read them, the outputs read the outcome; none needs to import
another to do so.
"""

from __future__ import annotations

from .records import (
    TLSA_USAGES,
    CertificateHash,
    KeyFile,
    Login,
    LoginAnswer,
    Observation,
    PlaintextAnswer,
    Target,
    TlsaAnswer,
    TlsaRecord,
    VerifyError,
)
from .settings import (
    DaneSettings,
    PlaintextCheck,
    Policy,
    PostureLimits,
    RevocationCheck,
    Settings,
    TargetDefaults,
    Thresholds,
    TlsFiles,
    TrustStore,
)
from .state import Check, Finding, State, worst

__all__ = [
    "TLSA_USAGES",
    "CertificateHash",
    "Check",
    "DaneSettings",
    "Finding",
    "KeyFile",
    "Login",
    "LoginAnswer",
    "Observation",
    "PlaintextAnswer",
    "PlaintextCheck",
    "Policy",
    "PostureLimits",
    "RevocationCheck",
    "Settings",
    "State",
    "Target",
    "TargetDefaults",
    "Thresholds",
    "TlsFiles",
    "TlsaAnswer",
    "TlsaRecord",
    "TrustStore",
    "VerifyError",
    "worst",
]
