"""From option values to typed settings: the one place where options become records.

argparse's Namespace stops here. :func:`settings_from_args` hands the
command line's values to :func:`settings_from_options`, which checks them,
loads what they name (roots, CRLs, a client certificate, the server's files)
once, and returns a frozen :class:`~.model.Settings`; pg_tls_exporter builds
each module's settings with the same function. A connection string's own
TLS keywords make a derived record (:func:`settings_for`); the files it
names are its hosts' trouble, never the other targets'.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .certs import facts
from .errors import LocalFileError, UsageError
from .model import (
    DaneSettings,
    Login,
    LoginRules,
    PlaintextCheck,
    PostureLimits,
    RevocationCheck,
    Settings,
    State,
    Target,
    TargetDefaults,
    TcpSettings,
    Thresholds,
    TlsFiles,
    TrustStore,
)
from .openssl_client import client_contexts
from .protocol import startup_message
from .targets import read_targets
from .thresholds import Range, parse_threshold

if TYPE_CHECKING:
    import argparse

    from cryptography import x509

    from .certs import CertFacts
    from .model import KeyFile
    from .openssl_client import ClientContexts
__all__ = [
    "OPTIONS",
    "TrustCache",
    "reread_server_files",
    "settings_for",
    "settings_from_args",
    "settings_from_options",
    "targets_from_args",
]

#: The options that are settings (argparse's names); the others choose the
#: output, or the targets.
OPTIONS = (
    "sslmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "audit_crl",
    "sslcert",
    "sslkey",
    "negotiation",
    "warning",
    "critical",
    "crl_warning",
    "crl_critical",
    "min_tls_version",
    "min_rsa_bits",
    "min_ec_bits",
    "weak_signature_state",
    "channel_binding_state",
    "passwordless_state",
    "cert_file",
    "key_file",
    "check_plaintext",
    "plaintext_state",
    "check_auth",
    "check_revocation",
    "revocation_unknown_state",
    "dane",
    "dns_server",
    "dane_missing_state",
    "dane_insecure_state",
    "unreachable_state",
    "timeout",
    "port",
    "servername",
    "family",
)

#: libpq keywords a connection string may set for its own hosts, and the
#: option each stands for.
_KEYWORDS = {
    "sslmode": "sslmode",
    "sslrootcert": "sslrootcert",
    "sslcrl": "sslcrl",
    "sslcrldir": "sslcrldir",
    "sslcert": "sslcert",
    "sslkey": "sslkey",
    "sslnegotiation": "negotiation",
}
# sslmodes that let a client run without TLS: the check still looks at the
# TLS the server offers, as "require" would, and says what the mode allows.
_PLAINTEXT_MODES = ("disable", "allow", "prefer")


def settings_from_args(args: argparse.Namespace, single: bool = True) -> Settings:
    """The settings of a command line; ``single``: it names one target.

    Raises:
        UsageError, LocalFileError: as :func:`settings_from_options`.
    """
    return settings_from_options(single=single, **{name: getattr(args, name) for name in OPTIONS})


def settings_from_options(
    *,
    sslmode: str = "verify-full",
    sslrootcert: str | None = None,
    sslcrl: str | None = None,
    sslcrldir: str | None = None,
    audit_crl: Sequence[str] = (),
    sslcert: str | None = None,
    sslkey: str | None = None,
    negotiation: str = "postgres",
    warning: str = "20",
    critical: str = "15",
    crl_warning: float = 2.0,
    crl_critical: float = 1.0,
    min_tls_version: str = "TLSv1.2",
    min_rsa_bits: int = 2048,
    min_ec_bits: int = 256,
    weak_signature_state: str = "critical",
    channel_binding_state: str = "warning",
    passwordless_state: str = "warning",
    cert_file: str | None = None,
    key_file: str | None = None,
    check_plaintext: str | None = None,
    plaintext_state: str = "warning",
    check_auth: str | None = None,
    check_revocation: bool = False,
    revocation_unknown_state: str = "warning",
    dane: bool = False,
    dns_server: str | None = None,
    dane_missing_state: str = "warning",
    dane_insecure_state: str = "warning",
    unreachable_state: str = "critical",
    timeout: float = 10.0,
    port: int = 5432,
    servername: str | None = None,
    family: int = 0,
    single: bool = True,
) -> Settings:
    """Settings from option values, named and spelt as the command line's long options.

    The values are checked as the options are (argparse has checked their
    types and choices); ``single`` says that one target is checked, which
    ``cert_file`` and ``key_file`` need.

    Raises:
        UsageError: values that do not go together, or cannot be used.
        LocalFileError: a file they name cannot be used.
    """
    try:
        thresholds = Thresholds(
            parse_threshold(warning),
            parse_threshold(critical),
            _days_from(crl_warning),
            _days_from(crl_critical),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # Not given, or empty (libpq: an empty path is not given): the system's
    # roots, which require reads as none.
    files = TlsFiles(
        sslrootcert or "system",
        sslcrl,
        sslcrldir,
        sslcert,
        sslkey,
        tuple(audit_crl),
        sslrootcert_given=bool(sslrootcert),
    )
    problem = _weak_with_system_roots(sslmode, files)
    if problem is not None:
        raise UsageError(problem)
    trust = load_trust(sslmode, files)
    server_files = _server_files(cert_file, key_file, single)
    return Settings(
        sslmode=sslmode,
        client_sslmode=None,
        negotiation=negotiation,
        files=files,
        trust=trust,
        thresholds=thresholds,
        posture=PostureLimits(
            min_tls_version=min_tls_version,
            min_rsa_bits=min_rsa_bits,
            min_ec_bits=min_ec_bits,
            weak_signature=State.from_name(weak_signature_state),
            channel_binding=State.from_name(channel_binding_state),
            passwordless=State.from_name(passwordless_state),
        ),
        unreachable=State.from_name(unreachable_state),
        cert_file=server_files[0],
        key_file=server_files[1],
        plaintext=_plaintext(check_plaintext, plaintext_state),
        login=_login(check_auth),
        revocation=(
            RevocationCheck(State.from_name(revocation_unknown_state)) if check_revocation else None
        ),
        dane=_dane(dane, dns_server, dane_missing_state, dane_insecure_state, server_files[0]),
        timeout=timeout,
        targets=TargetDefaults(port, servername, family),
    )


def _days_from(days: float) -> Range:
    """``days:`` (alerts below ``days``), written back as ``{days:g}:``."""
    try:
        return Range.parse(f"{days:g}:")
    except ValueError:
        # A tiny number in exponent form: the range, as the number is.
        return Range(False, days, float("inf"))


#: What each distinct set of TLS files loaded (or why it could not), for
#: :func:`settings_for`: one run, or one probe, loads each set once.
TrustCache = dict[tuple[bool, TlsFiles], TrustStore | str]


def settings_for(target: Target, base: Settings, loaded: TrustCache) -> Settings | str:
    """The settings ``target`` is checked with: ``base`` with its connection string's own.

    A string's own files are loaded for it (once per distinct set, in
    ``loaded``); when they cannot be, the reason is returned instead, and
    only this target is not checked.
    """
    own = {key: value for key, value in target.settings if key in _KEYWORDS}
    tcp = _tcp(target.settings)
    rules = _login_rules(target.settings)
    if not own:
        return (
            base
            if (tcp, rules) == (None, LoginRules())
            else base._replace(tcp=tcp, login_rules=rules)
        )
    sslmode = own.get("sslmode", base.sslmode)
    client_sslmode = None
    if sslmode in _PLAINTEXT_MODES:
        client_sslmode, sslmode = sslmode, "require"
    files = TlsFiles(
        own.get("sslrootcert", base.files.sslrootcert),
        own.get("sslcrl", base.files.sslcrl),
        own.get("sslcrldir", base.files.sslcrldir),
        own.get("sslcert", base.files.sslcert),
        own.get("sslkey", base.files.sslkey),
        base.files.audit_crl,
        sslrootcert_given="sslrootcert" in own or base.files.sslrootcert_given,
    )
    problem = _weak_with_system_roots(client_sslmode or sslmode, files)
    if problem is not None:
        return problem
    files, ignored = _as_libpq_reads(files, own, sslmode)
    key = (_loads_roots(sslmode, files), files)
    if key == (_loads_roots(base.sslmode, base.files), base.files):
        trust: TrustStore | str = base.trust
    elif key in loaded:
        trust = loaded[key]
    else:
        try:
            trust = load_trust(sslmode, files)
        except (UsageError, LocalFileError) as exc:
            trust = str(exc)
        loaded[key] = trust
    if isinstance(trust, str):
        return trust
    if ignored is not None:
        trust = trust._replace(crls_ignored=ignored)
    return base._replace(
        sslmode=sslmode,
        client_sslmode=client_sslmode,
        negotiation=own.get("sslnegotiation", base.negotiation),
        files=files,
        trust=trust,
        tcp=tcp,
        login_rules=rules,
    )


def _login_rules(settings: tuple[tuple[str, str], ...]) -> LoginRules:
    given = dict(settings)
    return LoginRules(given.get("channel_binding", "prefer"), given.get("require_auth") or None)


def _as_libpq_reads(
    files: TlsFiles, own: dict[str, str], sslmode: str
) -> tuple[TlsFiles, str | None]:
    """A connection string's own files as libpq takes them, and why its CRLs go unused.

    Where libpq goes on without a file of the string, silently, so does the
    check (fe-secure-openssl.c, initialize_SSL): an sslcert that does not
    exist sends no client certificate (nor is sslkey read); under
    ``require`` an sslrootcert that does not exist verifies nothing; an
    sslcrldir that does not exist adds no CRL beside a loaded sslcrl
    (OpenSSL's directory lookup finds nothing there); an sslcrl OpenSSL
    cannot load turns revocation off altogether, which is said (a WARNING).
    What libpq fails on is left to the loading, whose reason is the answer;
    the options' own files are always read strictly (a typo is UNKNOWN).
    """
    ignored = None
    if "sslcert" in own and files.sslcert and _absent(files.sslcert):
        files = files._replace(sslcert=None, sslkey=None)
    roots = files.sslrootcert
    if "sslrootcert" in own and roots != "system" and sslmode == "require" and _absent(roots):
        files = files._replace(sslrootcert="system", sslrootcert_given=False)
    if not _loads_roots(sslmode, files):
        return files, ignored
    if "sslcrl" in own and files.sslcrl and not _loadable_crls(files.sslcrl):
        ignored = (
            f"libpq cannot load sslcrl {files.sslcrl} (it silently goes on without it): "
            "clients with this connection string check no revocation at all, nor sslcrldir"
        )
        files = files._replace(sslcrl=None, sslcrldir=None)
    elif "sslcrldir" in own and files.sslcrl and not os.path.isdir(files.sslcrldir or ""):
        files = files._replace(sslcrldir=None)
    return files, ignored


def _absent(path: str) -> bool:
    """libpq's stat() says the file is not there (not: it cannot be read)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def _loadable_crls(path: str) -> bool:
    """Whether OpenSSL's X509_STORE_load_file, which libpq calls, takes the file."""
    from OpenSSL import crypto

    try:
        crypto.X509Store().load_locations(path)
    except (crypto.Error, OSError):
        return False
    return True


def _tcp(settings: tuple[tuple[str, str], ...]) -> TcpSettings | None:
    """A connection string's TCP keywords, as the integers libpq reads (strtol: blanks
    and a sign allowed; the string's reading has checked them)."""
    given = {key: int(value.strip()) for key, value in settings if key in TcpSettings._fields}
    return TcpSettings(**given) if given else None


def _weak_with_system_roots(sslmode: str, files: TlsFiles) -> str | None:
    """libpq 16+ refuses the system's roots without the name checked; the default
    ``system`` of the options counts only for verify-ca (require reads it as none)."""
    if files.sslrootcert != "system" or sslmode == "verify-full":
        return None
    refusal = (
        f'libpq 16+ refuses it: weak sslmode "{sslmode}" may not be used with '
        'sslrootcert=system (use "verify-full")'
    )
    if files.sslrootcert_given:
        return f"sslmode {sslmode} with sslrootcert system: {refusal}"
    if sslmode == "verify-ca":
        return (
            "sslmode verify-ca needs a root certificate file (sslrootcert, --sslrootcert "
            f"FILE): with the system's roots, the default, {refusal}"
        )
    return None


def _loads_roots(sslmode: str, files: TlsFiles) -> bool:
    # libpq reads a root file only when it exists; with require and the
    # default, nothing is loaded. An explicit file that cannot be read
    # is a configuration error, whatever the sslmode.
    return sslmode != "require" or files.sslrootcert != "system"


def load_trust(sslmode: str, files: TlsFiles) -> TrustStore:
    """Load what the TLS files name: OpenSSL's contexts, CRLs, the client certificate.

    Raises:
        UsageError, LocalFileError: they cannot be used.
    """
    sslrootcert = files.sslrootcert if _loads_roots(sslmode, files) else None
    if files.sslkey and not files.sslcert:
        raise UsageError("--sslkey needs --sslcert")
    contexts = client_contexts(
        sslrootcert, files.sslcrl, files.sslcrldir, files.sslcert, files.sslkey
    )
    trust = _crls(files, contexts)
    if sslrootcert is not None:
        from .libpq_openssl import LibpqStore

        # Loaded on first use: the second opinion on every chain the
        # verdict's OpenSSL accepts, from libpq's own OpenSSL.
        trust = trust._replace(libpq=LibpqStore(sslrootcert, contexts.sslcrl, contexts.sslcrldir))
    if files.sslcert:
        trust = _client_certificate(trust, files.sslcert, files.sslkey or files.sslcert)
    return trust


def _crls(files: TlsFiles, contexts: ClientContexts) -> TrustStore:
    """The CRLs to judge, and what libpq would ignore."""
    if not (files.sslcrl or files.sslcrldir or files.audit_crl):
        return TrustStore(contexts)
    # Only the options that name files need it.
    from .local_files import read_certificates, read_crl_dir, read_crls, read_pem_crls

    crls = [crl._replace(audited=True) for path in files.audit_crl for crl in read_crls(path)]
    ignored = None
    if contexts.checks_crls:
        # What libpq's store holds: the root file's CRLs (OpenSSL loads them
        # with its certificates), then sslcrl's and sslcrldir's.
        if contexts.sslrootcert is not None:
            crls += read_pem_crls(contexts.sslrootcert, "root certificate file")
        if files.sslcrl:
            crls += read_crls(files.sslcrl)
        if files.sslcrldir:
            crls += read_crl_dir(files.sslcrldir)
    elif files.sslcrl or files.sslcrldir:
        ignored = (
            "libpq ignores sslcrl and sslcrldir without a root certificate file (here: "
            f"sslrootcert={contexts.sslrootcert or 'none'}): clients set up like this "
            "check no revocation"
        )
    issuers: tuple[CertFacts, ...] = ()
    if contexts.sslrootcert not in (None, "system"):
        # Only to check CRL signatures; OpenSSL has read the file for trust
        # already, including forms cryptography does not read.
        try:
            roots = read_certificates(contexts.sslrootcert, "root certificate file")
        except LocalFileError:
            roots = ()
        issuers = tuple(facts(cert) for cert in roots)
    return TrustStore(
        contexts,
        crls=tuple(crls),
        checks_crls=contexts.checks_crls,
        crl_issuers=issuers,
        crls_ignored=ignored,
    )


def _client_certificate(trust: TrustStore, sslcert: str, sslkey: str) -> TrustStore:
    """The client certificate to judge, and its key file's mode (libpq's rule)."""
    from .local_files import read_certificates

    status = os.stat(sslkey)
    return trust._replace(
        client_cert=facts(read_certificates(sslcert, "client certificate file")[0]),
        # libpq's rule depends on who owns the file, not on who reads it.
        client_key_mode=(sslkey, status.st_mode, status.st_uid == 0),
    )


def _server_files(
    cert_file: str | None, key_file: str | None, single: bool
) -> tuple[tuple[str, x509.Certificate] | None, KeyFile | None]:
    if not (cert_file or key_file):
        return None, None
    if not single:
        raise UsageError("--cert-file and --key-file check one server's files: give one target")
    from .local_files import inspect_key_file, read_cert_file

    cert = (cert_file, read_cert_file(cert_file)) if cert_file else None
    key = inspect_key_file(key_file) if key_file else None
    return cert, key


def reread_server_files(settings: Settings) -> Settings:
    """``settings`` with the server's certificate and key files read again.

    A resident process (pg_tls_exporter) keeps a module's settings loaded;
    these two files say what is on disk now, so each probe reads them anew.

    Raises:
        UsageError, LocalFileError: as :func:`settings_from_options`.
    """
    cert_path = settings.cert_file[0] if settings.cert_file is not None else None
    key_path = settings.key_file.path if settings.key_file is not None else None
    if cert_path is None and key_path is None:
        return settings
    cert, key = _server_files(cert_path, key_path, True)
    dane = settings.dane
    if dane is not None and cert is not None:
        from .local_files import read_certificates

        dane = dane._replace(renewed=(cert[0], read_certificates(cert[0], "certificate file")))
    return settings._replace(cert_file=cert, key_file=key, dane=dane)


def _plaintext(check_plaintext: str | None, state: str) -> PlaintextCheck | None:
    if not check_plaintext:
        return None
    user, _, database = check_plaintext.partition("@")
    try:
        # The message is built again when sent; this only proves it can be.
        startup_message(user, database or user)
    except ValueError:
        raise UsageError(
            f"invalid --check-plaintext {check_plaintext!r}: give USER[@DATABASE]"
        ) from None
    return PlaintextCheck(user, database or user, State.from_name(state))


def _login(check_auth: str | None) -> Login | None:
    if check_auth is None:
        return None
    user, _, database = check_auth.partition("@")
    try:
        # The message is built again when sent; this only proves it can be.
        startup_message(user, database or user)
    except ValueError:
        raise UsageError(f"invalid --check-auth {check_auth!r}: give USER[@DATABASE]") from None
    return Login(user, database or user)


def _dane(
    dane: bool,
    dns_server: str | None,
    missing_state: str,
    insecure_state: str,
    cert_file: tuple[str, x509.Certificate] | None,
) -> DaneSettings | None:
    if not dane:
        if dns_server:
            raise UsageError("--dns-server is for --dane")
        return None
    from .dane import parse_dns_server

    try:
        # dnspython is an optional extra; only --dane needs it.
        from . import tlsa_lookup  # noqa: F401
    except ImportError:
        raise UsageError(
            "--dane needs dnspython: pip install 'check_pg_tls[dane]' (or dnspython)"
        ) from None
    try:
        server = parse_dns_server(dns_server) if dns_server else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    renewed = None
    if cert_file is not None:
        from .local_files import read_certificates

        renewed = (cert_file[0], read_certificates(cert_file[0], "certificate file"))
    return DaneSettings(
        server, State.from_name(missing_state), State.from_name(insecure_state), renewed
    )


def targets_from_args(args: argparse.Namespace) -> list[tuple[Target, str | None]]:
    """The command line's targets (see :func:`.targets.read_targets`)."""
    return read_targets(
        [*args.host, *args.targets],
        args.targets_file,
        TargetDefaults(args.port, args.servername, args.family),
        {keyword: getattr(args, option) for keyword, option in _KEYWORDS.items()},
    )
