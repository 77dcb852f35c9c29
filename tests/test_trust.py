"""OpenSSL decides trust in the handshake; we word its answer.

Each test serves a chain over PostgreSQL's negotiation on loopback (a small
in-process server: a real PostgreSQL serves real chains in the matrix and
scenario tests), probes it with real OpenSSL verification, and checks the
exact sentence an admin reads.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from check_pg_tls.errors import LocalFileError
from check_pg_tls.model import Policy, State, Target
from check_pg_tls.openssl_client import client_contexts
from check_pg_tls.probe import probe
from check_pg_tls.verdict import Verdict, judge
from testbed.faults import FaultServer, postgres_tls
from testbed.pki import Issued, make_intermediate, make_leaf, make_root, write_pem

ROOT = make_root()
INTERMEDIATE = make_intermediate(ROOT)
LEAF = make_leaf(INTERMEDIATE)
OTHER_ROOT = make_root("Some Other Root")


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def verdict(
    folder: Path,
    chain: list[Issued],
    key: Issued,
    roots: list[Issued],
    sslmode: str = "verify-full",
) -> Verdict:
    """Serve ``chain``, probe it trusting ``roots``, judge it."""
    cert_file = write_pem(folder / "chain.crt", *chain)
    key_file = folder / "server.key"
    key_file.write_bytes(key.key_pem)
    root_file = write_pem(folder / "roots.crt", *roots)
    with FaultServer(postgres_tls(cert_file, key_file)) as server:
        observation = probe(
            Target("127.0.0.1", server.port, "db.test"), 5, client_contexts(str(root_file))
        )
    policy = Policy(sslmode=sslmode, servername="db.test", sslrootcert=str(root_file))
    return judge(observation, policy, dt.datetime.now(dt.timezone.utc))


def problem(result: Verdict, check: str = "trust") -> str | None:
    (finding,) = [f for f in result.findings if f.check == check]
    return finding.problem


def test_complete_chain_is_trusted(files: Path) -> None:
    result = verdict(files, [LEAF, INTERMEDIATE], LEAF, [ROOT])
    assert problem(result) is None
    assert problem(result, "intermediates") is None
    assert len(result.path) == 3
    assert result.relevant == (0, 1)


def test_missing_intermediate_is_named_as_the_problem(files: Path) -> None:
    result = verdict(files, [LEAF], LEAF, [ROOT])
    assert problem(result) == (
        "chain does not reach a trusted root: the server sends no intermediate certificate "
        "(issuer CN=check_pg_tls Test Intermediate,O=check_pg_tls tests); add it to ssl_cert_file"
    )


def test_intermediate_from_the_root_file_fills_the_gap_with_a_warning(files: Path) -> None:
    result = verdict(files, [LEAF], LEAF, [ROOT, INTERMEDIATE])
    assert problem(result) is None
    finding = next(f for f in result.findings if f.check == "intermediates")
    assert finding.severity is State.WARNING
    assert finding.problem is not None
    assert finding.problem.startswith(
        "server sends no intermediate certificate (CN=check_pg_tls Test Intermediate,"
    )


def test_trusted_intermediate_without_its_root_is_not_enough(files: Path) -> None:
    # libpq does not allow partial chains: the path must end in a root.
    result = verdict(files, [LEAF, INTERMEDIATE], LEAF, [INTERMEDIATE])
    assert problem(result) == (
        "chain does not reach a trusted root: issuer CN=check_pg_tls Test Root,O=check_pg_tls "
        "tests of intermediate CN=check_pg_tls Test Intermediate,O=check_pg_tls tests is "
        "neither sent by the server nor a trusted root"
    )


def test_self_signed_leaf_is_called_self_signed(files: Path) -> None:
    snakeoil = make_leaf(None)
    result = verdict(files, [snakeoil], snakeoil, [ROOT])
    assert problem(result) == "certificate is self-signed and not in the trusted roots"


def test_self_signed_leaf_in_the_root_file_is_trusted(files: Path) -> None:
    snakeoil = make_leaf(None)
    assert problem(verdict(files, [snakeoil], snakeoil, [snakeoil])) is None


def test_chain_ending_in_an_untrusted_root_names_it(files: Path) -> None:
    inter = make_intermediate(OTHER_ROOT, "Other Intermediate")
    leaf = make_leaf(inter)
    result = verdict(files, [leaf, inter, OTHER_ROOT], leaf, [ROOT])
    assert problem(result) == (
        "chain ends in CN=Some Other Root,O=check_pg_tls tests, which is not a trusted root"
    )


def test_unknown_issuer_of_an_intermediate_is_named(files: Path) -> None:
    inter = make_intermediate(OTHER_ROOT, "Other Intermediate")
    leaf = make_leaf(inter)
    result = verdict(files, [leaf, inter], leaf, [ROOT])
    assert problem(result) == (
        "chain does not reach a trusted root: issuer CN=Some Other Root,O=check_pg_tls tests "
        "of intermediate CN=Other Intermediate,O=check_pg_tls tests is neither sent by the "
        "server nor a trusted root"
    )


def test_expired_intermediate_from_the_root_file_is_named_with_its_date(files: Path) -> None:
    old = make_intermediate(ROOT, "Old Intermediate", days_before=400, days_after=-3)
    leaf = make_leaf(old)
    result = verdict(files, [leaf], leaf, [ROOT, old])
    assert problem(result) == (
        f"intermediate CN=Old Intermediate,O=check_pg_tls tests (from the root certificate "
        f"file) expired on {old.cert.not_valid_after_utc:%Y-%m-%d}"
    )


def test_expired_intermediate_sent_is_left_to_days_left(files: Path) -> None:
    old = make_intermediate(ROOT, "Old Intermediate", days_before=400, days_after=-3)
    leaf = make_leaf(old)
    result = verdict(files, [leaf, old], leaf, [ROOT])
    # Not "the server sends no intermediate": it sends one, expired.
    assert problem(result) is None
    assert result.limiting == 1
    assert result.days_left < -2


def test_expired_trusted_root_is_named(files: Path) -> None:
    root = make_root("Expired Root", days_before=400, days_after=-1)
    inter = make_intermediate(root)
    leaf = make_leaf(inter)
    result = verdict(files, [leaf, inter], leaf, [root])
    assert problem(result) == (
        f"trusted root CN=Expired Root,O=check_pg_tls tests expired on "
        f"{root.cert.not_valid_after_utc:%Y-%m-%d}"
    )


def test_renewed_root_beside_its_expired_copy_is_used(files: Path) -> None:
    old = Issued(make_root("check_pg_tls Test Root", days_before=400, days_after=-1).cert, ROOT.key)
    # Same name, other key: OpenSSL picks the issuer whose key signed.
    assert problem(verdict(files, [LEAF, INTERMEDIATE], LEAF, [old, ROOT])) is None


def test_client_only_leaf_is_not_for_a_server(files: Path) -> None:
    leaf = make_leaf(INTERMEDIATE, server_auth=False)
    result = verdict(files, [leaf, INTERMEDIATE], leaf, [ROOT])
    assert problem(result) == (
        "certificate's key usage or extended key usage does not allow TLS server use"
    )


def test_leaf_issued_by_a_leaf_is_not_trusted(files: Path) -> None:
    leaf = make_leaf(LEAF)
    result = verdict(files, [leaf, LEAF, INTERMEDIATE], leaf, [ROOT])
    assert problem(result) == (
        "intermediate O=check_pg_tls tests is not a valid CA certificate, yet issued the "
        "certificate below it"
    )


def test_path_length_is_enforced(files: Path) -> None:
    lower = make_intermediate(INTERMEDIATE, "Lower Intermediate")  # below pathLen 0
    leaf = make_leaf(lower)
    result = verdict(files, [leaf, lower, INTERMEDIATE], leaf, [ROOT])
    assert problem(result) == (
        "intermediate CN=check_pg_tls Test Intermediate,O=check_pg_tls tests allows fewer "
        "intermediates below it than the chain has (path length)"
    )


def test_untrusted_chain_under_require_is_not_judged(files: Path) -> None:
    snakeoil = make_leaf(None)
    result = verdict(files, [snakeoil], snakeoil, [ROOT], sslmode="require")
    assert "trust" in {f.check for f in result.findings}  # roots given: as verify-ca


# --- the root file goes through OpenSSL's own loader --------------------------


def trusts(folder: Path, root_file: Path) -> bool:
    """Whether a chain under ROOT verifies with ``root_file`` as the trusted roots."""
    cert_file = write_pem(folder / "served.crt", LEAF, INTERMEDIATE)
    key_file = folder / "served.key"
    key_file.write_bytes(LEAF.key_pem)
    with FaultServer(postgres_tls(cert_file, key_file)) as server:
        observation = probe(
            Target("127.0.0.1", server.port, "db.test"), 5, client_contexts(str(root_file))
        )
    policy = Policy(sslmode="verify-full", servername="db.test", sslrootcert=str(root_file))
    return problem(judge(observation, policy, dt.datetime.now(dt.timezone.utc))) is None


def test_trusted_certificate_form_is_accepted(files: Path) -> None:
    plain = write_pem(files / "root.pem", ROOT)
    trusted = files / "root-trusted.pem"
    subprocess.run(
        [
            "openssl",
            "x509",
            "-in",
            str(plain),
            "-trustout",
            "-addtrust",
            "serverAuth",
            "-out",
            str(trusted),
        ],
        check=True,
    )
    assert b"BEGIN TRUSTED CERTIFICATE" in trusted.read_bytes()
    assert trusts(files, trusted)


def test_text_around_pem_and_a_key_are_accepted(files: Path) -> None:
    path = files / "bundle.pem"
    path.write_bytes(b"Our root, renewed 2026\n" + ROOT.cert_pem + b"\nnotes\n" + ROOT.key_pem)
    assert trusts(files, path)
    # And a file without this root does not vouch for the chain.
    other = write_pem(files / "other.pem", OTHER_ROOT)
    assert not trusts(files, other)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"", "(no certificate or crl found); libpq cannot either", id="empty"),
        pytest.param(b"not a certificate\n", "no certificate or crl found", id="text"),
    ],
)
def test_unusable_root_file_is_a_clear_error(files: Path, content: bytes, message: str) -> None:
    path = files / "roots.crt"
    path.write_bytes(content)
    with pytest.raises(LocalFileError, match=r"^OpenSSL cannot use root certificate file ") as err:
        client_contexts(str(path))
    assert message in str(err.value)


def test_der_root_file_is_refused_as_libpq_refuses_it(files: Path) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    path = files / "root.der"
    path.write_bytes(ROOT.cert.public_bytes(Encoding.DER))
    with pytest.raises(LocalFileError, match="OpenSSL cannot use root certificate file"):
        client_contexts(str(path))


def test_missing_and_directory_root_files_say_so(files: Path) -> None:
    with pytest.raises(LocalFileError, match="No such file or directory"):
        client_contexts(str(files / "absent.crt"))
    with pytest.raises(LocalFileError, match="it is a directory"):
        client_contexts(str(files))
