"""Path building to a trusted root, the way OpenSSL does it for libpq."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from check_pg_tls.local_files import LocalFileError, load_roots
from check_pg_tls.trust import ChainCheck, check_chain
from testbed.pki import Issued, make_intermediate, make_leaf, make_root, write_pem

NOW = dt.datetime.now(dt.timezone.utc)

ROOT = make_root()
INTERMEDIATE = make_intermediate(ROOT)
LEAF = make_leaf(INTERMEDIATE)


def check(presented: list[Issued], roots: list[Issued | x509.Certificate]) -> ChainCheck:
    return check_chain(
        [issued.cert for issued in presented],
        [root.cert if isinstance(root, Issued) else root for root in roots],
        NOW,
    )


# --- check_chain --------------------------------------------------------------


def test_leaf_and_intermediate_reach_the_root_in_the_store() -> None:
    result = check([LEAF, INTERMEDIATE], [ROOT])
    assert result.ok
    assert result.problem is None
    assert result.path == (LEAF.cert, INTERMEDIATE.cert, ROOT.cert)


def test_root_sent_by_the_server_is_harmless() -> None:
    result = check([LEAF, INTERMEDIATE, ROOT], [ROOT])
    assert result.ok
    assert result.path == (LEAF.cert, INTERMEDIATE.cert, ROOT.cert)


def test_missing_intermediate_is_named_as_the_problem() -> None:
    result = check([LEAF], [ROOT])
    assert not result.ok
    assert result.problem is not None
    assert "sends no intermediate" in result.problem


def test_intermediate_from_the_store_fills_the_gap() -> None:
    result = check([LEAF], [INTERMEDIATE, ROOT])
    assert result.ok
    assert result.path == (LEAF.cert, INTERMEDIATE.cert, ROOT.cert)


def test_trusted_intermediate_without_its_root_is_not_enough() -> None:
    # OpenSSL's default: no X509_V_FLAG_PARTIAL_CHAIN.
    assert not check([LEAF, INTERMEDIATE], [INTERMEDIATE]).ok
    assert not check([LEAF], [INTERMEDIATE]).ok


def test_self_signed_leaf_not_in_the_store_is_called_self_signed() -> None:
    snakeoil = make_leaf(None)
    result = check([snakeoil], [ROOT])
    assert not result.ok
    assert result.problem is not None
    assert "self-signed" in result.problem


def test_self_signed_leaf_in_the_store_is_trusted() -> None:
    snakeoil = make_leaf(None)
    result = check([snakeoil], [snakeoil])
    assert result.ok
    assert result.path == (snakeoil.cert,)


def test_chain_from_an_unknown_ca_is_not_trusted() -> None:
    other_root = make_root("Some Other Root")
    assert not check([LEAF, INTERMEDIATE], [other_root]).ok


def test_chain_ending_in_an_untrusted_root_is_not_trusted() -> None:
    other_root = make_root("check_pg_tls Test Root")  # same name, other key
    result = check([LEAF, INTERMEDIATE, ROOT], [other_root])
    assert not result.ok


def test_leaf_issued_by_a_non_ca_leaf_is_not_trusted() -> None:
    parent = make_leaf(ROOT, common_name="not a CA")
    child = make_leaf(parent)
    result = check([child, parent], [ROOT])
    assert not result.ok
    assert result.problem is not None
    assert "not a CA" in result.problem


def test_leaf_for_client_auth_only_is_not_trusted_for_a_server() -> None:
    client_only = make_leaf(INTERMEDIATE, server_auth=False)
    result = check([client_only, INTERMEDIATE], [ROOT])
    assert not result.ok
    assert result.problem is not None
    assert "key usage" in result.problem


def test_expired_trusted_root_is_named_as_expired() -> None:
    old_root = make_root(days_before=400, days_after=-1)
    result = check([make_leaf(old_root)], [old_root])
    assert not result.ok
    assert result.problem is not None
    assert "expired" in result.problem


def test_trusted_root_not_yet_valid_is_not_trusted() -> None:
    future_root = make_root(days_before=-1)
    result = check([make_leaf(future_root)], [future_root])
    assert not result.ok
    assert result.problem is not None
    assert "not valid before" in result.problem


def test_intermediate_path_length_is_enforced() -> None:
    # INTERMEDIATE has pathLen 0: it may not issue another CA below it.
    sub = make_intermediate(INTERMEDIATE, common_name="Sub Intermediate")
    leaf = make_leaf(sub)
    assert not check([leaf, sub, INTERMEDIATE], [ROOT]).ok


def renewed(root: Issued, not_before: dt.datetime, not_after: dt.datetime) -> x509.Certificate:
    """The same root (name and key) re-issued with another validity period."""
    return (
        x509.CertificateBuilder()
        .subject_name(root.cert.subject)
        .issuer_name(root.cert.subject)
        .public_key(root.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(root.key.public_key()), critical=False
        )
        .sign(root.key, hashes.SHA256())
    )


def test_expired_copy_of_a_renewed_root_does_not_hide_the_valid_one() -> None:
    root = make_root("Renewed Root")
    expired_copy = renewed(root, NOW - dt.timedelta(days=4000), NOW - dt.timedelta(days=1))
    leaf = make_leaf(root)
    result = check([leaf], [expired_copy, root])
    assert result.ok, result.problem
    assert result.path == (leaf.cert, root.cert)


# --- load_roots ---------------------------------------------------------------


def one_line_roots_error(spec: str) -> str:
    with pytest.raises(LocalFileError) as caught:
        load_roots(spec)
    message = str(caught.value)
    assert message
    assert "\n" not in message
    return message


def test_roots_file_is_loaded_in_order(tmp_path: Path) -> None:
    other = make_root("Second Root")
    roots = load_roots(str(write_pem(tmp_path / "roots.crt", ROOT, other)))
    assert roots == (ROOT.cert, other.cert)


def test_missing_roots_file_is_a_roots_error(tmp_path: Path) -> None:
    message = one_line_roots_error(str(tmp_path / "absent.crt"))
    assert "absent.crt" in message


def test_roots_path_that_is_a_directory_is_a_roots_error(tmp_path: Path) -> None:
    one_line_roots_error(str(tmp_path))


def test_empty_roots_file_is_a_roots_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.crt"
    empty.write_bytes(b"")
    one_line_roots_error(str(empty))


def test_non_pem_roots_file_is_a_roots_error(tmp_path: Path) -> None:
    der = tmp_path / "root.der"
    der.write_bytes(ROOT.cert.public_bytes(serialization.Encoding.DER))
    one_line_roots_error(str(der))


def test_text_roots_file_is_a_roots_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("these are not the certificates\nyou are looking for\n")
    one_line_roots_error(str(text))


def _system_store_present() -> bool:
    paths = ssl.get_default_verify_paths()
    return bool(
        (paths.cafile and os.path.isfile(paths.cafile))
        or (paths.capath and os.path.isdir(paths.capath))
    )


@pytest.mark.skipif(not _system_store_present(), reason="no system trust store here")
def test_system_roots_load_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        roots = load_roots("system")
    assert isinstance(roots, tuple)
    assert roots
    assert all(isinstance(root, x509.Certificate) for root in roots)
