"""RFC 4745 / RFC 5025 rule parsing and evaluation, pure: no event loop, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from presencex.auth.rules import (
    Decision,
    Provide,
    RuleSet,
    Transformations,
    evaluate,
    identity_key,
    parse_datetime,
    parse_rules,
)
from presencex.bodies.xmlparse import BodyError
from tests.auth.docs import (
    FOO_NS,
    PR,
    RFC4745_MANY_DOMAIN_EXCEPT,
    RFC4745_MANY_EXCEPT,
    RFC4745_ONE,
    RFC4745_RULESET,
    RFC4745_VALIDITY,
    RFC5025_EXAMPLE,
    default_ns_ruleset,
    one,
    rule,
    ruleset,
)

PRESENTITY = "sip:someone@example.com"
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC).timestamp()


def decide(
    document: bytes | RuleSet | None,
    watcher: str,
    *,
    now: float = NOW,
    sphere: str | None = None,
) -> Decision:
    rules = parse_rules(document) if isinstance(document, bytes) else document
    return evaluate(rules, watcher=watcher, presentity=PRESENTITY, now=now, sphere=sphere)


def handling(
    document: bytes, watcher: str, *, now: float = NOW, sphere: str | None = None
) -> str | None:
    return decide(document, watcher, now=now, sphere=sphere).sub_handling


# --------------------------------------------------------- RFC examples


def test_rfc5025_example_parses_to_its_rule() -> None:
    rules = parse_rules(RFC5025_EXAMPLE)
    assert [r.id for r in rules.rules] == ["a"]
    only = rules.rules[0]
    assert only.sub_handling == "allow"
    assert only.conditions.identities[0].ones == frozenset({"sip:user@example.com"})
    t = only.transformations
    assert t.services == Provide(service_uri_schemes=frozenset({"sip", "mailto"}))
    assert t.persons == Provide(all=True)
    assert t.devices == Provide()
    assert t.attributes == frozenset({"activities"})
    assert t.user_input == "bare"
    assert t.unknown_attributes == frozenset({(FOO_NS, "foo")})
    assert not t.all_attributes


def test_rfc5025_example_allows_only_its_watcher() -> None:
    allowed = decide(RFC5025_EXAMPLE, "sip:user@example.com")
    assert allowed.sub_handling == "allow"
    assert allowed.matched_rule_ids == ("a",)
    other = decide(RFC5025_EXAMPLE, "sip:someone-else@example.com")
    assert other == Decision(None, Transformations(), ())


def test_rfc4745_one_matches_each_listed_entity() -> None:
    doc = default_ns_ruleset(RFC4745_ONE)
    for watcher in ("sip:alice@example.com", "tel:+1-212-555-1234", "mailto:bob@example.net"):
        assert handling(doc, watcher) == "allow", watcher
    assert handling(doc, "sip:bob@example.net") is None


@pytest.mark.parametrize(
    ("watcher", "expected"),
    [
        ("sip:carol@example.net", "allow"),
        ("sip:carol@example.com", None),  # domain excepted
        ("sip:dave@example.org", None),  # domain excepted
        ("sip:alice@bad.example.net", None),  # identity excepted
        ("sip:bob@good.example.net", None),
        ("sip:alice@good.example.net", "allow"),
        ("tel:+1-212-555-1234", None),
        ("tel:+1-212-555-9999", "allow"),
    ],
)
def test_rfc4745_many_except_domains_and_identities(watcher: str, expected: str | None) -> None:
    assert handling(default_ns_ruleset(RFC4745_MANY_EXCEPT), watcher) == expected


@pytest.mark.parametrize(
    ("watcher", "expected"),
    [
        ("sip:carol@example.com", "allow"),
        ("sip:carol@EXAMPLE.com", "allow"),
        ("sip:alice@example.com", None),
        ("sip:bob@example.com", None),
        ("sip:carol@example.net", None),
        ("sip:carol@sub.example.com", None),
    ],
)
def test_rfc4745_many_domain_except_identities(watcher: str, expected: str | None) -> None:
    assert handling(default_ns_ruleset(RFC4745_MANY_DOMAIN_EXCEPT), watcher) == expected


def test_rfc4745_validity_window_in_its_timezone() -> None:
    doc = default_ns_ruleset(RFC4745_VALIDITY)
    start = datetime(2003, 8, 15, 15, 20, tzinfo=UTC).timestamp()  # 10:20 at -05:00
    end = datetime(2003, 9, 15, 15, 20, tzinfo=UTC).timestamp()
    anyone = "sip:x@example.com"
    assert handling(doc, anyone, now=start - 1) is None
    assert handling(doc, anyone, now=start) == "allow"  # from is inclusive
    assert handling(doc, anyone, now=end - 0.001) == "allow"
    assert handling(doc, anyone, now=end) is None  # until is exclusive


def test_rfc4745_ruleset_needs_every_condition() -> None:
    rules = parse_rules(RFC4745_RULESET)
    inside = datetime(2003, 12, 24, 17, 30, tzinfo=UTC).timestamp()  # 18:30 at +01:00
    alice = "sip:alice@example.com"
    assert decide(rules, alice, now=inside, sphere="work").matched_rule_ids == ("f3g44r1",)
    assert decide(rules, alice, now=inside, sphere="home").matched_rule_ids == ()
    assert decide(rules, alice, now=inside + 3600, sphere="work").matched_rule_ids == ()
    assert decide(rules, "sip:bob@example.com", now=inside, sphere="work").matched_rule_ids == ()
    # It matches but has no sub-handling: no decision, the watcher waits.
    assert decide(rules, alice, now=inside, sphere="work").sub_handling is None


# ------------------------------------------- Kamailio's evaluator differs


def test_most_permissive_wins_not_first_match() -> None:
    doc = ruleset(
        rule("deny", conditions=one("sip:bob@example.com"), handling="block"),
        rule("ok", conditions=one("sip:bob@example.com"), handling="allow"),
    )
    decision = decide(doc, "sip:bob@example.com")
    assert decision.sub_handling == "allow"
    assert decision.matched_rule_ids == ("deny", "ok")


def test_rule_without_identity_applies() -> None:
    doc = ruleset(
        rule("everyone", conditions="", handling="confirm"),
        rule("no-conditions", handling="polite-block"),
    )
    decision = decide(doc, "sip:stranger@elsewhere.example")
    assert decision.sub_handling == "polite-block"
    assert decision.matched_rule_ids == ("everyone", "no-conditions")


def test_rule_without_conditions_matches_even_an_unidentified_watcher() -> None:
    assert handling(ruleset(rule("all", handling="confirm")), "") == "confirm"


def test_many_domain_except_domain_and_id() -> None:
    doc = ruleset(
        rule(
            "r",
            conditions=(
                '<cr:identity><cr:many domain="Example.COM">'
                '<cr:except id="sip:mallory@example.com"/>'
                '<cr:except domain="example.com"/>'
                "</cr:many>"
                '<cr:many domain="example.net"><cr:except domain="other.example"/>'
                '<cr:except id="sip:eve@EXAMPLE.net"/></cr:many></cr:identity>'
            ),
            handling="allow",
        )
    )
    # example.com excepts itself as a domain: nobody there matches.
    assert handling(doc, "sip:carol@example.com") is None
    assert handling(doc, "sip:mallory@example.com") is None
    # example.net: everybody but eve (compared as an AOR, host case-insensitive).
    assert handling(doc, "sip:carol@example.net") == "allow"
    assert handling(doc, "sip:eve@example.net") is None
    assert handling(doc, "sip:eve@other.example") is None


def test_provide_in_foreign_namespace_is_ignored() -> None:
    doc = ruleset(
        rule(
            "r",
            handling="allow",
            transformations=(
                '<x:provide-activities xmlns:x="urn:example:not-pres-rules">true</x:provide-activities>'
                '<x:provide-all-attributes xmlns:x="urn:example:not-pres-rules"/>'
                "<pr:provide-mood>true</pr:provide-mood>"
            ),
        )
    )
    t = decide(doc, "sip:a@example.com").transformations
    assert t.attributes == frozenset({"mood"})
    assert not t.all_attributes
    assert not t.provides("activities")


def test_sub_handling_in_foreign_namespace_is_ignored() -> None:
    doc = ruleset(
        rule(
            "r",
            actions='<x:sub-handling xmlns:x="urn:example:other">allow</x:sub-handling>',
        )
    )
    decision = decide(doc, "sip:a@example.com")
    assert decision.matched_rule_ids == ("r",)
    assert decision.sub_handling is None


def test_pres_rules_prefix_may_be_anything() -> None:
    doc = ruleset(
        rule(
            "r",
            actions=f'<q:sub-handling xmlns:q="{PR}">allow</q:sub-handling>',
        )
    )
    assert handling(doc, "sip:a@example.com") == "allow"


# ----------------------------------------------------------- identities


@pytest.mark.parametrize(
    ("rule_id", "watcher", "matches"),
    [
        ("sip:alice@example.com", "sip:alice@example.com", True),
        ("sip:alice@example.com", "sip:alice@EXAMPLE.COM", True),  # host case-insensitive
        ("sip:alice@example.com", "sip:Alice@example.com", False),  # user case-sensitive
        ("sip:alice@example.com", "sip:alice@example.com:5060;transport=tcp", True),
        ("sip:alice@example.com", "sips:alice@example.com", True),
        ("sip:al%69ce@example.com", "sip:alice@example.com", True),  # %-escapes resolved
        ("sip:alice@example.com", "sip:alice@example.com.evil", False),
        ("tel:+1-212-555-1234", "tel:+12125551234", True),  # visual separators
        ("alice@example.com", "sip:alice@example.com", True),  # bare user@host
        ("mailto:bob@Example.NET", "mailto:bob@example.net", True),
        ("sip:alice@example.com", "", False),
        ("sip:alice@example.com", "not a uri at all", False),
    ],
)
def test_one_compares_addresses_of_record(rule_id: str, watcher: str, matches: bool) -> None:
    doc = ruleset(rule("r", conditions=one(rule_id), handling="allow"))
    assert (handling(doc, watcher) == "allow") is matches


def test_identity_children_are_ored() -> None:
    doc = ruleset(
        rule(
            "r",
            conditions=(
                '<cr:identity><cr:one id="sip:a@example.com"/>'
                '<cr:many domain="example.org"/>'
                '<x:group xmlns:x="urn:example:ext" name="friends"/></cr:identity>'
            ),
            handling="allow",
        )
    )
    assert handling(doc, "sip:a@example.com") == "allow"
    assert handling(doc, "sip:z@example.org") == "allow"
    assert handling(doc, "sip:b@example.com") is None


def test_unknown_identity_child_evaluates_false() -> None:
    doc = ruleset(
        rule(
            "r",
            conditions='<cr:identity><x:group xmlns:x="urn:example:ext"/></cr:identity>',
            handling="allow",
        )
    )
    assert handling(doc, "sip:a@example.com") is None


def test_one_with_an_extension_we_do_not_know_matches_nobody() -> None:
    doc = ruleset(
        rule(
            "r",
            conditions=(
                '<cr:identity><cr:one id="sip:a@example.com">'
                '<x:only-on-weekdays xmlns:x="urn:example:ext"/></cr:one></cr:identity>'
            ),
            handling="allow",
        )
    )
    assert handling(doc, "sip:a@example.com") is None


def test_many_without_domain_is_any_authenticated_identity() -> None:
    doc = ruleset(rule("r", conditions="<cr:identity><cr:many/></cr:identity>", handling="allow"))
    assert handling(doc, "sip:anyone@anywhere.example") == "allow"
    assert handling(doc, "tel:+15551234") == "allow"
    assert handling(doc, "") is None  # not authenticated: no identity at all


def test_identity_key_is_exposed_for_callers() -> None:
    assert identity_key("sips:alice@Example.com;transport=tls") == "sip:alice@example.com"
    assert identity_key("") is None


# --------------------------------------------------------------- sphere


@pytest.mark.parametrize(
    ("sphere", "matches"),
    [("work", True), ("home", True), ("bowling", False), (None, False), ("Work", False)],
)
def test_sphere_matches_one_of_its_tokens(sphere: str | None, matches: bool) -> None:
    doc = ruleset(rule("r", conditions='<cr:sphere value="work  home"/>', handling="allow"))
    assert (handling(doc, "sip:a@example.com", sphere=sphere) == "allow") is matches


def test_two_sphere_conditions_must_both_hold() -> None:
    doc = ruleset(
        rule(
            "r",
            conditions='<cr:sphere value="work"/><cr:sphere value="home"/>',
            handling="allow",
        )
    )
    assert handling(doc, "sip:a@example.com", sphere="work") is None
    assert parse_rules(doc).has_sphere_conditions
    assert not parse_rules(RFC5025_EXAMPLE).has_sphere_conditions


# ------------------------------------------------------------- validity


def validity(*pairs: tuple[str, str]) -> str:
    inner = "".join(f"<cr:from>{a}</cr:from><cr:until>{b}</cr:until>" for a, b in pairs)
    return f"<cr:validity>{inner}</cr:validity>"


def test_validity_with_several_intervals() -> None:
    doc = ruleset(
        rule(
            "r",
            conditions=validity(
                ("2024-06-01T09:00:00Z", "2024-06-01T10:00:00Z"),
                ("2024-06-01T15:00:00+02:00", "2024-06-01T16:00:00+02:00"),
            ),
            handling="allow",
        )
    )

    def at(hour: int, minute: int = 0) -> float:
        return datetime(2024, 6, 1, hour, minute, tzinfo=UTC).timestamp()

    watcher = "sip:a@example.com"
    assert handling(doc, watcher, now=at(8, 59)) is None
    assert handling(doc, watcher, now=at(9, 30)) == "allow"
    assert handling(doc, watcher, now=at(12)) is None
    assert handling(doc, watcher, now=at(13, 30)) == "allow"  # 15:30 at +02:00
    assert handling(doc, watcher, now=at(14)) is None


def test_validity_and_identity_are_anded() -> None:
    doc = ruleset(
        rule(
            "r",
            conditions=one("sip:a@example.com")
            + validity(("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z")),
            handling="allow",
        )
    )
    assert handling(doc, "sip:a@example.com") == "allow"
    assert handling(doc, "sip:a@example.com", now=NOW + 365 * 86400) is None
    assert handling(doc, "sip:b@example.com") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2003-08-15T10:20:00.000-05:00", datetime(2003, 8, 15, 15, 20, tzinfo=UTC)),
        ("2003-08-15T10:20:00Z", datetime(2003, 8, 15, 10, 20, tzinfo=UTC)),
        ("2003-08-15T10:20:00+14:00", datetime(2003, 8, 14, 20, 20, tzinfo=UTC)),
        ("2003-08-15T24:00:00Z", datetime(2003, 8, 16, tzinfo=UTC)),
        (" 2003-08-15T10:20:00.5Z ", datetime(2003, 8, 15, 10, 20, 0, 500000, tzinfo=UTC)),
    ],
)
def test_parse_datetime(text: str, expected: datetime) -> None:
    assert parse_datetime(text) == pytest.approx(expected.timestamp())


@pytest.mark.parametrize(
    "text",
    [
        "2003-08-15T10:20:00",  # no timezone (RFC 4745 §7.4, erratum 1455)
        "2003-08-15",
        "2003-02-30T10:20:00Z",
        "2003-08-15T24:30:00Z",
        "2003-08-15T10:20:00+15:00",
        "2003-08-15T10:20:00+01:60",
        "yesterday",
        "",
    ],
)
def test_parse_datetime_refuses(text: str) -> None:
    with pytest.raises(BodyError):
        parse_datetime(text)


# ------------------------------------------------------------ combining


def test_sub_handling_takes_the_maximum_in_any_order() -> None:
    order = ["block", "confirm", "polite-block", "allow"]
    for top in range(4):
        for first in range(top + 1):
            rules = [rule(f"r{n}", handling=order[i]) for n, i in enumerate((first, top))]
            for doc in (ruleset(*rules), ruleset(*reversed(rules))):
                assert handling(doc, "sip:a@example.com") == order[top]


def test_transformations_combine_over_matching_rules() -> None:
    doc = ruleset(
        rule(
            "a",
            handling="allow",
            transformations=(
                "<pr:provide-services><pr:service-uri-scheme>SIP</pr:service-uri-scheme>"
                "</pr:provide-services><pr:provide-activities>true</pr:provide-activities>"
                "<pr:provide-user-input>thresholds</pr:provide-user-input>"
                f'<pr:provide-unknown-attribute ns="{FOO_NS}" name="foo">true'
                "</pr:provide-unknown-attribute>"
            ),
        ),
        rule(
            "b",
            transformations=(
                "<pr:provide-services><pr:occurrence-id>t1</pr:occurrence-id></pr:provide-services>"
                "<pr:provide-persons><pr:all-persons/></pr:provide-persons>"
                "<pr:provide-activities>false</pr:provide-activities>"
                "<pr:provide-mood>1</pr:provide-mood>"
                "<pr:provide-user-input>bare</pr:provide-user-input>"
                f'<pr:provide-unknown-attribute ns="{FOO_NS}" name="bar">false'
                "</pr:provide-unknown-attribute>"
            ),
        ),
        rule(
            "c",
            conditions=one("sip:nobody@example.com"),
            transformations="<pr:provide-all-attributes/>",
        ),
    )
    t = decide(doc, "sip:a@example.com").transformations
    assert t.services == Provide(
        occurrence_ids=frozenset({"t1"}), service_uri_schemes=frozenset({"sip"})
    )
    assert t.persons == Provide(all=True)
    assert t.attributes == frozenset({"activities", "mood"})  # false does not revoke: OR
    assert t.user_input == "thresholds"
    assert t.unknown_attributes == frozenset({(FOO_NS, "foo")})
    assert not t.all_attributes  # rule c did not match


def test_matching_rules_without_sub_handling_leave_no_decision() -> None:
    doc = ruleset(rule("t", transformations="<pr:provide-note>true</pr:provide-note>"))
    decision = decide(doc, "sip:a@example.com")
    assert decision.sub_handling is None
    assert decision.matched_rule_ids == ("t",)
    assert decision.transformations.attributes == frozenset({"note"})


def test_no_rules_document_gives_no_decision() -> None:
    assert decide(None, "sip:a@example.com") == Decision(None, Transformations(), ())
    assert decide(ruleset(), "sip:a@example.com") == Decision(None, Transformations(), ())


def test_unknown_condition_rule_does_not_match() -> None:
    doc = ruleset(
        rule(
            "r",
            conditions='<x:on-holiday xmlns:x="urn:example:ext"/>',
            handling="allow",
        ),
        rule(
            "common-policy-but-unknown",
            conditions="<cr:future-condition/>",
            handling="allow",
        ),
        rule(
            "identity-in-another-namespace",
            conditions='<x:identity xmlns:x="urn:example:ext"><x:many/></x:identity>',
            handling="allow",
        ),
    )
    assert decide(doc, "sip:a@example.com") == Decision(None, Transformations(), ())


def test_unknown_actions_and_transformations_are_ignored() -> None:
    doc = ruleset(
        rule(
            "r",
            handling="allow",
            actions='<x:forward-to xmlns:x="urn:example:ext">sip:x@example.com</x:forward-to>',
            transformations=(
                '<x:provide-secrets xmlns:x="urn:example:ext">true</x:provide-secrets>'
                "<pr:provide-future-thing>true</pr:provide-future-thing>"
                "<pr:provide-services><pr:all-services/><pr:unknown-criterion>x"
                "</pr:unknown-criterion></pr:provide-services>"
            ),
        )
    )
    decision = decide(doc, "sip:a@example.com")
    assert decision.sub_handling == "allow"
    assert decision.transformations == Transformations(services=Provide(all=True))


def test_provide_criteria_of_each_kind() -> None:
    doc = ruleset(
        rule(
            "r",
            transformations=(
                "<pr:provide-services>"
                "<pr:service-uri>sip:Someone@EXAMPLE.com;transport=tcp</pr:service-uri>"
                "<pr:class>email</pr:class></pr:provide-services>"
                "<pr:provide-persons><pr:occurrence-id>p1</pr:occurrence-id>"
                "<pr:class>calendar</pr:class></pr:provide-persons>"
                "<pr:provide-devices><pr:deviceID>urn:device:1</pr:deviceID>"
                "<pr:occurence-id>d1</pr:occurence-id><pr:all-devices/></pr:provide-devices>"
            ),
        )
    )
    t = decide(doc, "sip:a@example.com").transformations
    assert t.services == Provide(
        classes=frozenset({"email"}), service_uris=frozenset({"sip:Someone@example.com"})
    )
    assert t.persons == Provide(occurrence_ids=frozenset({"p1"}), classes=frozenset({"calendar"}))
    # "occurence-id", the spelling of an early draft, still selects.
    assert t.devices == Provide(
        all=True, occurrence_ids=frozenset({"d1"}), device_ids=frozenset({"urn:device:1"})
    )


def test_decisions_are_hashable_and_compare_by_value() -> None:
    first = decide(RFC5025_EXAMPLE, "sip:user@example.com")
    second = decide(RFC5025_EXAMPLE, "sip:user@example.com")
    assert first == second
    assert hash(first.transformations) == hash(second.transformations)


# ------------------------------------------------------------ malformed


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"<not-closed", "not well-formed"),
        (b"", "empty"),
        (b'<!DOCTYPE r [<!ENTITY x "y">]><r/>', "DOCTYPE"),
        (b"<ruleset/>", "root element"),  # no namespace
        (f'<ruleset xmlns="{PR}"/>'.encode(), "root element"),
        (ruleset("<cr:rule/>"), "rule without id"),
        (ruleset(rule("x"), rule("x")), "duplicate rule id"),
        (ruleset(rule("x", conditions="<cr:identity><cr:one/></cr:identity>")), "one without id"),
        (
            ruleset(
                rule("x", conditions="<cr:identity><cr:many><cr:except/></cr:many></cr:identity>")
            ),
            "except without id or domain",
        ),
        (
            ruleset(rule("x", conditions='<cr:identity><cr:many domain=" "/></cr:identity>')),
            "many with an empty domain",
        ),
        (ruleset(rule("x", handling="maybe")), "bad sub-handling"),
        (ruleset(rule("x", conditions="<cr:sphere/>")), "sphere without value"),
        (
            ruleset(
                rule(
                    "x",
                    conditions="<cr:validity><cr:from>2003-08-15T10:20:00Z</cr:from></cr:validity>",
                )
            ),
            "from/until pairs",
        ),
        (
            ruleset(
                rule(
                    "x",
                    conditions=(
                        "<cr:validity><cr:until>2003-08-15T10:20:00Z</cr:until>"
                        "<cr:from>2003-08-15T10:20:00Z</cr:from></cr:validity>"
                    ),
                )
            ),
            "from/until pairs",
        ),
        (
            ruleset(
                rule("x", conditions=validity(("2003-08-15T10:20:00", "2004-01-01T00:00:00Z")))
            ),
            "timezone",
        ),
        (
            ruleset('<cr:rule id="x"><cr:conditions/><cr:conditions/></cr:rule>'),
            "more than one conditions",
        ),
        (
            ruleset(rule("x", transformations="<pr:provide-mood>yes</pr:provide-mood>")),
            "true or false",
        ),
        (
            ruleset(
                rule("x", transformations="<pr:provide-user-input>some</pr:provide-user-input>")
            ),
            "provide-user-input",
        ),
        (
            ruleset(
                rule(
                    "x",
                    transformations='<pr:provide-unknown-attribute name="foo">true</pr:provide-unknown-attribute>',
                )
            ),
            "without ns",
        ),
    ],
)
def test_malformed_rules_are_refused_with_a_reason(document: bytes, reason: str) -> None:
    with pytest.raises(BodyError, match=reason):
        parse_rules(document)


def test_sphere_conditions_hold_when_sphere_check_is_off() -> None:
    """Kamailio's enable_sphere_check = 0: sphere conditions are not evaluated."""
    doc = (
        b'<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy" '
        b'xmlns:pr="urn:ietf:params:xml:ns:pres-rules"><cr:rule id="w"><cr:conditions>'
        b'<cr:sphere value="work"/></cr:conditions><cr:actions>'
        b"<pr:sub-handling>allow</pr:sub-handling></cr:actions></cr:rule></cr:ruleset>"
    )
    rules = parse_rules(doc)
    kwargs = {"watcher": "sip:bob@example.com", "presentity": "sip:a@example.com", "now": 0.0}
    assert evaluate(rules, sphere="home", **kwargs).sub_handling is None  # type: ignore[arg-type]
    assert evaluate(rules, sphere="work", **kwargs).sub_handling == "allow"  # type: ignore[arg-type]
    off = evaluate(rules, sphere=None, check_sphere=False, **kwargs)  # type: ignore[arg-type]
    assert off.sub_handling == "allow"
