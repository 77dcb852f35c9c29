"""From the command line to a run's resources: targets, what they trust, what is judged.

Reads the target specs (host specs, targets files, libpq connection
strings), loads what the TLS settings name (roots, CRLs, a client
certificate) once per distinct setting, and builds one resource per target
with its policy. A connection string's own settings apply to its hosts, and
their trouble is theirs: the other targets are still checked.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import TYPE_CHECKING, Any, NamedTuple

from .model import State
from .options import UsageError

if TYPE_CHECKING:
    from cryptography import x509

    from .model import DaneSettings, KeyFile, Login, Target
    from .openssl_client import ClientContexts
    from .plugin import CertificateResource, Plaintext

__all__ = ["Setup", "build_resources", "load_setup", "read_targets"]


def read_targets(args: argparse.Namespace) -> list[tuple[Target, str | None]]:
    """Each target, and None; a line of the targets file that names none: a stand-in and why."""
    from .targets import (
        Line,
        Unparsed,
        distinct,
        looks_like_conninfo,
        name_problem,
        parse_conninfo_targets,
        parse_target,
        read_targets_file,
        shown_spec,
    )
    from .text import safe

    def parse(spec: str) -> list[Target]:
        if looks_like_conninfo(spec):
            found = parse_conninfo_targets(spec, args.port, args.family, args.sslmode)
            return [_without_defaults(args, target) for target in found]
        return [parse_target(spec, args.port, args.servername, args.family)]

    lines: list[Line] = []
    if args.targets_file:
        try:
            lines = read_targets_file(args.targets_file)
        except OSError as exc:
            raise UsageError(
                f"cannot read targets file {args.targets_file}: {exc.strerror}"
            ) from None
    if not (args.host or args.targets or lines):
        raise UsageError("no server to check: give -H HOST, TARGET or --targets-file FILE")
    problem = args.servername is not None and name_problem(args.servername)
    if problem:
        raise UsageError(f"invalid --servername '{safe(args.servername, 100)}': {problem}")
    targets: list[tuple[Target, str | None]] = []
    try:
        for spec in [*args.host, *args.targets]:
            targets.extend((target, None) for target in parse(spec))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # One bad line of a list is that line's own UNKNOWN; the others are checked.
    for line in lines:
        try:
            if line.problem:
                raise ValueError(f"invalid target '{shown_spec(line.text)}': {line.problem}")
            targets.extend((target, None) for target in parse(line.text))
        except ValueError as exc:
            targets.append((Unparsed(f"line {line.number}"), str(exc)))
    return distinct(targets)


def _without_defaults(args: argparse.Namespace, target: Target) -> Target:
    """The target without the settings that only repeat the options: the same check
    as a target spec with those options, and named as one."""
    kept = tuple(
        (key, value)
        for key, value in target.settings
        if key not in _OVERRIDES or getattr(args, _OVERRIDES[key]) != value
    )
    return target._replace(settings=kept)


def _label(target: Target, seen: set[str]) -> str:
    # Perfdata labels: stable (derived from the target), unique, and plain
    # word characters, which no grapher or perfdata parser needs quoted.
    base = re.sub(r"\W", "_", f"{target.checked_name}_{target.port}", flags=re.ASCII)
    if target.display is not None:
        # Two checks of one server: their settings tell them apart.
        settings = "_".join(f"{key}_{value}" for key, value in target.settings)
        base += "_" + re.sub(r"\W+", "_", settings, flags=re.ASCII).strip("_")
    label, n = base, 1
    while label in seen:
        n += 1
        label = f"{base}_{n}"
    seen.add(label)
    return f"{label}_"


def _local_files(
    args: argparse.Namespace, single: bool
) -> tuple[tuple[str, x509.Certificate] | None, KeyFile | None]:
    if not (args.cert_file or args.key_file):
        return None, None
    if not single:
        raise UsageError("--cert-file and --key-file check one server's files: give one target")
    from .local_files import inspect_key_file, read_cert_file

    cert = (args.cert_file, read_cert_file(args.cert_file)) if args.cert_file else None
    key = inspect_key_file(args.key_file) if args.key_file else None
    return cert, key


def _crls(args: argparse.Namespace, contexts: ClientContexts) -> dict[str, Any]:
    """The CRL part of the policy: what to judge, and what libpq would ignore."""
    if not (args.sslcrl or args.sslcrldir or args.audit_crl):
        return {}
    from .certs import facts
    from .errors import LocalFileError
    from .local_files import read_certificates, read_crl_dir, read_crls

    crls = [crl._replace(audited=True) for path in args.audit_crl for crl in read_crls(path)]
    ignored = None
    if contexts.checks_crls:
        if args.sslcrl:
            crls += read_crls(args.sslcrl)
        if args.sslcrldir:
            crls += read_crl_dir(args.sslcrldir)
    elif args.sslcrl or args.sslcrldir:
        ignored = (
            "libpq ignores sslcrl and sslcrldir without a root certificate file (here: "
            f"sslrootcert={contexts.sslrootcert or 'none'}): clients set up like this "
            "check no revocation"
        )
    issuers: tuple[Any, ...] = ()
    if contexts.sslrootcert not in (None, "system"):
        # Only to check CRL signatures; OpenSSL has read the file for trust
        # already, including forms cryptography does not read.
        try:
            roots = read_certificates(contexts.sslrootcert, "root certificate file")
        except LocalFileError:
            roots = ()
        issuers = tuple(facts(cert) for cert in roots)
    return {
        "crls": tuple(crls),
        "checks_crls": contexts.checks_crls,
        "crl_issuers": issuers,
        "crls_ignored": ignored,
    }


def _client_certificate(args: argparse.Namespace) -> dict[str, Any]:
    """The client certificate to judge, and its key file's mode (libpq's rule)."""
    if not args.sslcert:
        return {}
    from .certs import facts
    from .local_files import read_certificates

    key = args.sslkey or args.sslcert
    status = os.stat(key)
    return {
        "client_cert": facts(read_certificates(args.sslcert, "client certificate file")[0]),
        # libpq's rule depends on who owns the file, not on who reads it.
        "client_key_mode": (key, status.st_mode, status.st_uid == 0),
    }


def _plaintext(args: argparse.Namespace) -> Plaintext | None:
    if not args.check_plaintext:
        return None
    from .plugin import Plaintext
    from .protocol import startup_message

    user, _, database = args.check_plaintext.partition("@")
    try:
        # The message is built again when sent; this only proves it can be.
        startup_message(user, database or user)
    except ValueError:
        raise UsageError(
            f"invalid --check-plaintext {args.check_plaintext!r}: give USER[@DATABASE]"
        ) from None
    return Plaintext(user, database or user, State.from_name(args.plaintext_state))


def _login(args: argparse.Namespace) -> Login | None:
    if args.check_auth is None:
        return None
    from .model import Login
    from .protocol import startup_message

    user, _, database = args.check_auth.partition("@")
    try:
        # The message is built again when sent; this only proves it can be.
        startup_message(user, database or user)
    except ValueError:
        raise UsageError(
            f"invalid --check-auth {args.check_auth!r}: give USER[@DATABASE]"
        ) from None
    return Login(user, database or user)


def _dane(
    args: argparse.Namespace, cert_file: tuple[str, x509.Certificate] | None
) -> DaneSettings | None:
    if not args.dane:
        if args.dns_server:
            raise UsageError("--dns-server is for --dane")
        return None
    from .dane import parse_dns_server
    from .model import DaneSettings

    try:
        # dnspython is an optional extra; only --dane needs it.
        from . import tlsa_lookup  # noqa: F401
    except ImportError:
        raise UsageError(
            "--dane needs dnspython: pip install 'check_pg_tls[dane]' (or dnspython)"
        ) from None
    try:
        server = parse_dns_server(args.dns_server) if args.dns_server else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    renewed = None
    if cert_file is not None:
        from .local_files import read_certificates

        renewed = (cert_file[0], read_certificates(cert_file[0], "certificate file"))
    return DaneSettings(
        server,
        State.from_name(args.dane_missing_state),
        State.from_name(args.dane_insecure_state),
        renewed,
    )


class Setup(NamedTuple):
    """What the TLS settings of a run (or of one connection string) load."""

    contexts: ClientContexts
    policy: dict[str, Any]


#: Options a libpq connection string may set for its own hosts.
_OVERRIDES = {
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


def _effective(args: argparse.Namespace, target: Target) -> argparse.Namespace:
    """The options with a connection string's own settings over them."""
    merged = argparse.Namespace(**vars(args))
    merged.client_sslmode = None
    for key, value in target.settings:
        if key in _OVERRIDES:
            setattr(merged, _OVERRIDES[key], value)
    if merged.sslmode in _PLAINTEXT_MODES:
        merged.client_sslmode, merged.sslmode = merged.sslmode, "require"
    return merged


def load_setup(args: argparse.Namespace) -> Setup:
    """Load what the TLS settings name.

    Raises:
        UsageError, LocalFileError: they cannot be used.
    """
    # libpq reads a root file only when it exists; with require and the
    # default, nothing is loaded. An explicit file that cannot be read
    # is a configuration error, whatever the sslmode.
    sslrootcert = None
    if args.sslmode != "require" or args.sslrootcert != "system":
        sslrootcert = args.sslrootcert
    if args.sslkey and not args.sslcert:
        raise UsageError("--sslkey needs --sslcert")
    from .openssl_client import client_contexts

    contexts = client_contexts(sslrootcert, args.sslcrl, args.sslcrldir, args.sslcert, args.sslkey)
    policy = {**_crls(args, contexts), **_client_certificate(args)}
    client_sslmode = getattr(args, "client_sslmode", None)
    if client_sslmode is not None:
        policy["client_sslmode"] = client_sslmode
    return Setup(contexts, policy)


def build_resources(
    args: argparse.Namespace,
    targets: list[tuple[Target, str | None]],
    base: Setup,
    timeout: float,
) -> list[CertificateResource]:
    from .errors import LocalFileError
    from .model import Policy
    from .plugin import CertificateResource, UncheckedResource

    single = len(targets) == 1
    cert_file, key_file = _local_files(args, single)
    plaintext = _plaintext(args)
    login = _login(args)
    revocation = None
    if args.check_revocation:
        from .crl_fetch import CrlFetcher
        from .plugin import Revocation

        revocation = Revocation(CrlFetcher(), State.from_name(args.revocation_unknown_state))
    dane = _dane(args, cert_file)
    seen: set[str] = set()
    setups: dict[tuple[tuple[str, str], ...], Setup | str] = {(): base}
    resources: list[CertificateResource] = []
    for target, problem in targets:
        label = "" if single else _label(target, seen)
        options = args
        if not problem and target.settings:
            options = _effective(args, target)
            if target.settings not in setups:
                # A connection string's own files: their trouble is its hosts'.
                try:
                    setups[target.settings] = load_setup(options)
                except (UsageError, LocalFileError) as exc:
                    setups[target.settings] = str(exc)
        own = setups[target.settings if not problem else ()]
        if problem or isinstance(own, str):
            resources.append(UncheckedResource(target, problem or str(own), label))
            continue
        resources.append(
            CertificateResource(
                target,
                Policy(
                    sslmode=options.sslmode,
                    servername=target.checked_name,
                    sslrootcert=own.contexts.sslrootcert,
                    min_tls_version=args.min_tls_version,
                    min_rsa_bits=args.min_rsa_bits,
                    min_ec_bits=args.min_ec_bits,
                    weak_signature=State.from_name(args.weak_signature_state),
                    channel_binding=State.from_name(args.channel_binding_state),
                    passwordless=State.from_name(args.passwordless_state),
                    cert_file=cert_file,
                    key_file=key_file,
                    **own.policy,
                ),
                own.contexts,
                timeout,
                label=label,
                direct=options.negotiation == "direct",
                plaintext=plaintext,
                login=login,
                revocation=revocation,
                dane=dane,
            )
        )
    return resources
