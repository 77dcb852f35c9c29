"""The shared records, in one home: states and findings, targets and what was
seen of them, how to check.

Pure data, no I/O: the network modules produce records, the judgement
modules read them, the outputs read the outcome; none needs to import
another to do so.
"""

from __future__ import annotations

from .outcome import (
    CertSummary,
    CheckedAs,
    CheckResult,
    ClientCertSummary,
    CrlSummary,
    Outcome,
    Perfdata,
    Session,
)
from .records import (
    TLS_VERSIONS,
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
    LoginRules,
    PlaintextCheck,
    Policy,
    PostureLimits,
    RevocationCheck,
    Settings,
    TargetDefaults,
    TcpSettings,
    Thresholds,
    TlsFiles,
    TrustStore,
)
from .state import Check, Finding, State, worst

__all__ = [
    "TLSA_USAGES",
    "TLS_VERSIONS",
    "CertSummary",
    "CertificateHash",
    "Check",
    "CheckResult",
    "CheckedAs",
    "ClientCertSummary",
    "CrlSummary",
    "DaneSettings",
    "Finding",
    "KeyFile",
    "Login",
    "LoginAnswer",
    "LoginRules",
    "Observation",
    "Outcome",
    "Perfdata",
    "PlaintextAnswer",
    "PlaintextCheck",
    "Policy",
    "PostureLimits",
    "RevocationCheck",
    "Session",
    "Settings",
    "State",
    "Target",
    "TargetDefaults",
    "TcpSettings",
    "Thresholds",
    "TlsFiles",
    "TlsaAnswer",
    "TlsaRecord",
    "TrustStore",
    "VerifyError",
    "worst",
]
