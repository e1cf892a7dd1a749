"""Personal data in free text: e-mail addresses, phone numbers, card numbers, US SSNs, IBANs, IPs.

A regular expression only proposes candidates; a library decides (email-validator, phonenumbers,
python-stdnum's Luhn, IBAN and SSN checks, `ipaddress`), so look-alikes that fail a checksum pass.
Detectors run in a fixed order and a later one never claims text an earlier one did (a card number
is not also read as a phone number).

Known limits, by choice: phone numbers without a country code are read as US numbers; an SSN must
be written AAA-GG-SSSS or AAA GG SSSS (a bare nine-digit number is more often a ZIP+4 or an id);
a dotted quad such as a four-part version number reads as an IPv4 address.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from stdnum import iban, luhn
from stdnum.us import ssn

PHONE_REGION = "US"


class PiiKind(StrEnum):
    """A kind of personal data; the value is its mask placeholder's name."""

    EMAIL_ADDRESS = "EMAIL_ADDRESS"
    PHONE_NUMBER = "PHONE_NUMBER"
    CREDIT_CARD = "CREDIT_CARD"
    US_SSN = "US_SSN"
    IBAN = "IBAN"
    IP_ADDRESS = "IP_ADDRESS"

    @property
    def placeholder(self) -> str:
        return f"[{self.value}]"

    @property
    def described(self) -> str:
        """How an error message names it (never the matched text itself)."""
        return _DESCRIBED[self]


_DESCRIBED = {
    PiiKind.EMAIL_ADDRESS: "an e-mail address",
    PiiKind.PHONE_NUMBER: "a phone number",
    PiiKind.CREDIT_CARD: "a credit-card number",
    PiiKind.US_SSN: "a US social security number",
    PiiKind.IBAN: "an IBAN",
    PiiKind.IP_ADDRESS: "an IP address",
}


@dataclass(frozen=True)
class PiiMatch:
    kind: PiiKind
    start: int
    end: int


_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)+")
_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}"
    r"(?:[A-Za-z0-9]{11,30}|(?: [A-Za-z0-9]{4}){2,7}(?: [A-Za-z0-9]{1,3})?)(?![A-Za-z0-9])"
)
_CARD = re.compile(
    r"(?<![\d-])(?:\d{13,19}"  # unseparated
    r"|\d{4}([ -])\d{4}\1\d{4}\1\d{1,4}(?:\1\d{1,3})?"  # 4-4-4-4 (13 to 19 digits)
    r"|\d{4}([ -])\d{6}\2\d{4,5})(?![\d-])"  # 4-6-5 (Amex) and 4-6-4 (Diners)
)
_SSN = re.compile(r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d-])")
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(?![\w:])")


def _emails(text: str) -> Iterator[tuple[int, int]]:
    for m in _EMAIL.finditer(text):
        try:
            validate_email(m.group(), check_deliverability=False)
        except EmailNotValidError:
            continue
        yield m.span()


def _ibans(text: str) -> Iterator[tuple[int, int]]:
    for m in _IBAN.finditer(text):
        candidate = m.group()
        # A grouped IBAN may have swallowed a following four-letter word: drop trailing groups.
        while len(candidate.replace(" ", "")) >= 15:
            if iban.is_valid(candidate):
                yield m.start(), m.start() + len(candidate)
                break
            if " " not in candidate:
                break
            candidate = candidate.rsplit(" ", 1)[0]


def _cards(text: str) -> Iterator[tuple[int, int]]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn.is_valid(digits) and digits.strip("0"):
            yield m.span()


def _ssns(text: str) -> Iterator[tuple[int, int]]:
    for m in _SSN.finditer(text):
        if ssn.is_valid(m.group()):
            yield m.span()


def _ips(text: str) -> Iterator[tuple[int, int]]:
    for m in _IPV6.finditer(text):
        candidate = m.group().rstrip(".")
        if not any(c in "0123456789abcdefABCDEF" for c in candidate):
            continue  # a bare "::" in prose
        for value in (candidate, candidate.rstrip(":")):
            try:
                ipaddress.IPv6Address(value)
            except ValueError:
                continue
            yield m.start(), m.start() + len(value)
            break
    for m in _IPV4.finditer(text):
        try:
            ipaddress.IPv4Address(m.group())
        except ValueError:
            continue
        yield m.span()


def _phones(text: str) -> Iterator[tuple[int, int]]:
    matcher = phonenumbers.PhoneNumberMatcher(
        text, PHONE_REGION, leniency=phonenumbers.Leniency.VALID
    )
    for m in matcher:
        yield m.start, m.end


# Most specific first: each later detector only gets text no earlier one claimed.
_DETECTORS: tuple[tuple[PiiKind, Callable[[str], Iterator[tuple[int, int]]]], ...] = (
    (PiiKind.EMAIL_ADDRESS, _emails),
    (PiiKind.IBAN, _ibans),
    (PiiKind.CREDIT_CARD, _cards),
    (PiiKind.US_SSN, _ssns),
    (PiiKind.IP_ADDRESS, _ips),
    (PiiKind.PHONE_NUMBER, _phones),
)


def find_pii(text: str) -> list[PiiMatch]:
    """Every piece of personal data in `text`, in order, none overlapping another."""
    found: list[PiiMatch] = []
    for kind, detect in _DETECTORS:
        for start, end in detect(text):
            if not any(start < m.end and m.start < end for m in found):
                found.append(PiiMatch(kind, start, end))
    return sorted(found, key=lambda m: m.start)


def mask_pii(text: str, matches: list[PiiMatch] | None = None) -> str:
    """`text` with each piece of personal data replaced by its kind's placeholder."""
    parts: list[str] = []
    position = 0
    for match in find_pii(text) if matches is None else matches:
        parts += [text[position : match.start], match.kind.placeholder]
        position = match.end
    parts.append(text[position:])
    return "".join(parts)
