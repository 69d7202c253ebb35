"""Name rules: Kubernetes names, Linux interface names, and CrossConnection names."""

import hashlib
import re

from flexsfc.model.constants import MAX_IFNAME_LEN

MAX_DNS_LABEL_LEN = 63
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HASH_LEN = 10  # hex digits (40 bits) of sha256 appended when a plain name would be ambiguous or long


def dns_label_problem(name: str) -> str | None:
    """Why `name` is not a DNS-1123 label (Kubernetes names, label values), or None if it is one."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_DNS_LABEL_LEN:
        return f"is {len(name)} characters long, at most {MAX_DNS_LABEL_LEN} are allowed"
    if not _DNS_LABEL.match(name):
        return "must consist of lower case letters, digits and '-', and start and end with a letter or digit"
    return None


def ifname_problem(name: str) -> str | None:
    """Why `name` is not a valid Linux interface name, or None if it is one."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_IFNAME_LEN:
        return f"is {len(name)} characters long, Linux allows at most {MAX_IFNAME_LEN}"
    if name in (".", ".."):
        return "must not be '.' or '..'"
    if "/" in name or ":" in name or any(c.isspace() for c in name):
        return "must not contain '/', ':' or whitespace"
    return None


def cross_connection_name(chain: str, nf_a: str, nf_b: str) -> str:
    """Stable, unique, valid Kubernetes name of the CrossConnection linking `nf_a` and `nf_b`.

    Plain `<chain>-<nfA>-<nfB>` when that is unambiguous: NF names without '-' make the last two
    '-'-separated tokens the NF names, so no two links share the name. Otherwise ("a-b"+"c" and
    "a"+"b-c" both read "a-b-c"), or when the plain name exceeds 63 characters, the name becomes a
    prefix of it plus "--" and a hash of the full tuple. A plain name never ends in "--<token>"
    (its NF A token is non-empty), so hashed and plain names cannot collide either.
    """
    plain = f"{chain}-{nf_a}-{nf_b}".lower()
    if "-" not in nf_a and "-" not in nf_b and len(plain) <= MAX_DNS_LABEL_LEN:
        return plain
    digest = hashlib.sha256(f"{chain}\0{nf_a}\0{nf_b}".encode()).hexdigest()[:_HASH_LEN]
    prefix = plain[: MAX_DNS_LABEL_LEN - _HASH_LEN - 2].rstrip("-")
    return f"{prefix}--{digest}"
