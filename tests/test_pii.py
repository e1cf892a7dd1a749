"""Personal-data detection: each kind is found and masked, and look-alikes are left alone."""

from __future__ import annotations

import pytest

from modelyard.gateway.pii import PiiKind, find_pii, mask_pii
from modelyard.gateway.texts import map_arguments

FOUND = [
    ("write to jane.doe+news@example.co.uk today", "jane.doe+news@example.co.uk", "EMAIL_ADDRESS"),
    ("call (415) 555-2671 now", "(415) 555-2671", "PHONE_NUMBER"),
    ("call +44 20 7946 0958 now", "+44 20 7946 0958", "PHONE_NUMBER"),
    ("call 202-555-0143.", "202-555-0143", "PHONE_NUMBER"),
    ("card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111", "CREDIT_CARD"),
    ("card 5500-0000-0000-0004 ok", "5500-0000-0000-0004", "CREDIT_CARD"),
    ("amex 378282246310005", "378282246310005", "CREDIT_CARD"),
    ("amex 3782 822463 10005", "3782 822463 10005", "CREDIT_CARD"),
    ("my ssn is 536-22-1234, thanks", "536-22-1234", "US_SSN"),
    ("iban DE89 3704 0044 0532 0130 00 please", "DE89 3704 0044 0532 0130 00", "IBAN"),
    ("iban GB82WEST12345698765432.", "GB82WEST12345698765432", "IBAN"),
    ("pay BE71 0961 2345 6769 then", "BE71 0961 2345 6769", "IBAN"),
    ("host 192.168.100.200 is down", "192.168.100.200", "IP_ADDRESS"),
    ("host 2001:db8:85a3::8a2e:370:7334.", "2001:db8:85a3::8a2e:370:7334", "IP_ADDRESS"),
    ("mapped ::ffff:10.0.0.1 here", "::ffff:10.0.0.1", "IP_ADDRESS"),
]

LOOK_ALIKES = [
    "card 4111 1111 1111 1112 fails the Luhn check",
    "card 4111111111111112 too",
    "not an iban: DE88 3704 0044 0532 0130 00",
    "not an ssn: 000-12-3456 or 666-12-3456 or 078-05-1120",
    "not an ip: 999.1.1.1 or 1.2.3 and std::vector<int> and the :: operator",
    "not an e-mail: x@localhost or a..b@example.com or @handle",
    "on 2024-01-15 at 10:30:45, build 12.4, 3 items for $1,299.99",
    "room 123 phone 555-0100 is fictional and too short",
]


@pytest.mark.parametrize(("text", "value", "kind"), FOUND)
def test_each_kind_is_found_and_masked(text: str, value: str, kind: str):
    [match] = find_pii(text)
    assert (match.kind, text[match.start : match.end]) == (kind, value)
    masked = mask_pii(text)
    assert masked == text.replace(value, f"[{kind}]")
    assert value not in masked


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_look_alikes_are_not_personal_data(text: str):
    assert find_pii(text) == []
    assert mask_pii(text) == text


def test_several_kinds_in_one_text_each_get_their_placeholder():
    text = "Mail jane@example.com or call +1 650 253 0000 from 10.0.0.7 with card 4012888888881881."
    assert mask_pii(text) == (
        "Mail [EMAIL_ADDRESS] or call [PHONE_NUMBER] from [IP_ADDRESS] with card [CREDIT_CARD]."
    )
    assert [m.kind for m in find_pii(text)] == [
        PiiKind.EMAIL_ADDRESS,
        PiiKind.PHONE_NUMBER,
        PiiKind.IP_ADDRESS,
        PiiKind.CREDIT_CARD,
    ]


def test_a_card_number_is_not_also_read_as_a_phone_number():
    assert [m.kind for m in find_pii("4111111111111111")] == [PiiKind.CREDIT_CARD]


def test_tool_call_arguments_stay_json_when_masked():
    arguments = '{"to": "jane@example.com", "card": 4111111111111111, "n": 3}'
    assert map_arguments(arguments, mask_pii) == (
        '{"to":"[EMAIL_ADDRESS]","card":"[CREDIT_CARD]","n":3}'
    )
    assert map_arguments('{"n": 3}', mask_pii) == '{"n": 3}'  # untouched when nothing matched
    assert map_arguments("not json jane@example.com", mask_pii) == "not json [EMAIL_ADDRESS]"
