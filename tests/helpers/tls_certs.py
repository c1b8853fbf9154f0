"""Test certificates for the TLS tests (the `cryptography` package).

Makes a throwaway CA and server certificates signed by it, all ECDSA P-256,
and reads certificates back (fingerprints, names) for comparisons.
Used on the host by tests/test_tls.py and inside the jail by tls_probe.py.
"""
import base64
import datetime
import hashlib
import ipaddress
import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----", re.S)


def _name(cn, org="meshwrap tests"):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])


def make_ca(cn="meshwrap-tests upstream CA"):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_leaf(ca_key, ca_cert, names, cn=None):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    cert = (x509.CertificateBuilder()
            .subject_name(_name(cn or names[0]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def fingerprint(cert_or_der):
    """SHA-256 of the DER encoding, lowercase hex."""
    der = cert_or_der if isinstance(cert_or_der, bytes) else \
        cert_or_der.public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def pem_ders(text):
    """The DER bytes of every certificate in a PEM text, in order, without
    parsing them (a system bundle may hold certificates that today's
    `cryptography` warns about or rejects)."""
    out = []
    for m in PEM_RE.finditer(text):
        b64 = "".join(m.group(0).splitlines()[1:-1])
        out.append(base64.b64decode(b64))
    return out


def pem_fingerprints(text):
    return [fingerprint(d) for d in pem_ders(text)]


def load_pems(text):
    """Every certificate in a PEM text, in order, parsed."""
    return [x509.load_der_x509_certificate(d) for d in pem_ders(text)]


def common_name(name):
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attrs[0].value if attrs else None


def describe(cert):
    """What a test wants to know about a certificate, JSON-friendly."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(v) for v in san.get_values_for_type(x509.DNSName)] + \
                [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return {
        "sha256": fingerprint(cert),
        "subject_cn": common_name(cert.subject),
        "issuer_cn": common_name(cert.issuer),
        "issuer": cert.issuer.rfc4514_string(),
        "san": names,
        "is_ca": is_ca,
    }
