"""Property tests: any rule set evaluates without raising, combining does not
depend on rule order, and filtering always leaves a valid PIDF."""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from presencex.auth.rules import (
    ATTRIBUTES,
    SUB_HANDLING_VALUES,
    USER_INPUT_LEVELS,
    Provide,
    RuleSet,
    Transformations,
    evaluate,
    parse_rules,
)
from presencex.auth.transform import filter_pidf
from presencex.bodies.pidf import pidf_ids, tuple_statuses, validate_pidf
from presencex.bodies.xmlparse import BodyError
from tests.auth.docs import CIPID_NS, FOO_NS, RPID_PIDF, rule, ruleset

IDS = [
    "sip:alice@example.com",
    "sip:Alice@EXAMPLE.com",
    "sips:bob@example.net",
    "tel:+1-212-555-1234",
    "mailto:carol@example.org",
    "alice@example.com",
    "sip:example.com",
]
DOMAINS = ["example.com", "EXAMPLE.net", "example.org", "other.example"]
SPHERES = ["work", "home", "travel"]


def attribute(name: str, value: str) -> str:
    return f'{name}="{value}"'


@st.composite
def identities(draw: st.DrawFn) -> str:
    children: list[str] = []
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            children.append(f"<cr:one {attribute('id', draw(st.sampled_from(IDS)))}/>")
            continue
        excepts = "".join(
            f"<cr:except {attribute('id', value)}/>"
            if draw(st.booleans())
            else f"<cr:except {attribute('domain', draw(st.sampled_from(DOMAINS)))}/>"
            for value in draw(st.lists(st.sampled_from(IDS), max_size=3))
        )
        domain = draw(st.none() | st.sampled_from(DOMAINS))
        opening = "<cr:many>" if domain is None else f"<cr:many {attribute('domain', domain)}>"
        children.append(f"{opening}{excepts}</cr:many>")
    return "<cr:identity>" + "".join(children) + "</cr:identity>"


def xs_datetime(when: datetime) -> str:
    offset = when.utcoffset() or timedelta()
    if offset == timedelta():
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    sign = "-" if offset < timedelta() else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


BASE = datetime(2024, 1, 1, tzinfo=UTC)
ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))]
)


@st.composite
def validities(draw: st.DrawFn) -> str:
    pairs = []
    for _ in range(draw(st.integers(1, 3))):
        start = BASE + timedelta(hours=draw(st.integers(-48, 48)))
        end = start + timedelta(hours=draw(st.integers(-2, 24)))
        pairs.append(
            f"<cr:from>{xs_datetime(start.astimezone(draw(ZONES)))}</cr:from>"
            f"<cr:until>{xs_datetime(end.astimezone(draw(ZONES)))}</cr:until>"
        )
    return "<cr:validity>" + "".join(pairs) + "</cr:validity>"


spheres = st.lists(st.sampled_from(SPHERES), min_size=1, max_size=2).map(
    lambda values: f'<cr:sphere value="{" ".join(values)}"/>'
)
unknown_conditions = st.just('<x:unknown xmlns:x="urn:example:ext"/>')
conditions = st.none() | st.lists(
    st.one_of(identities(), validities(), spheres, unknown_conditions), max_size=3
).map("".join)

PROVIDE_FRAGMENTS = [
    "<pr:provide-services><pr:all-services/></pr:provide-services>",
    "<pr:provide-services><pr:service-uri-scheme>mailto</pr:service-uri-scheme></pr:provide-services>",
    "<pr:provide-services><pr:occurrence-id>bs35r9</pr:occurrence-id></pr:provide-services>",
    "<pr:provide-persons><pr:all-persons/></pr:provide-persons>",
    "<pr:provide-persons><pr:class>calendar</pr:class></pr:provide-persons>",
    "<pr:provide-devices><pr:deviceID>urn:device:phone-2</pr:deviceID></pr:provide-devices>",
    "<pr:provide-all-attributes/>",
    f'<pr:provide-unknown-attribute ns="{FOO_NS}" name="foo">true</pr:provide-unknown-attribute>',
    '<x:provide-activities xmlns:x="urn:example:ext">true</x:provide-activities>',
    *(f"<pr:provide-{name}>true</pr:provide-{name}>" for name in ATTRIBUTES),
    *(f"<pr:provide-user-input>{level}</pr:provide-user-input>" for level in USER_INPUT_LEVELS),
]
transformations = st.lists(st.sampled_from(PROVIDE_FRAGMENTS), max_size=4).map("".join)


@st.composite
def rule_sets(draw: st.DrawFn) -> list[str]:
    count = draw(st.integers(0, 5))
    return [
        rule(
            f"r{n}",
            conditions=draw(conditions),
            handling=draw(st.none() | st.sampled_from(SUB_HANDLING_VALUES)),
            transformations=draw(transformations),
        )
        for n in range(count)
    ]


watchers = st.sampled_from([*IDS, "", "sip:", "garbage", "sip:dave@example.com"]) | st.text(
    max_size=30
)
moments = st.integers(-72, 72).map(lambda hours: (BASE + timedelta(hours=hours)).timestamp())


@settings(max_examples=300, deadline=None)
@given(
    rules=rule_sets(),
    watcher=watchers,
    now=moments,
    sphere=st.none() | st.sampled_from(SPHERES),
    order=st.randoms(use_true_random=False),
)
def test_evaluate_never_raises_and_ignores_rule_order(
    rules: list[str], watcher: str, now: float, sphere: str | None, order: random.Random
) -> None:
    parsed = parse_rules(ruleset(*rules))
    decision = evaluate(parsed, watcher=watcher, presentity=IDS[0], now=now, sphere=sphere)
    shuffled = list(parsed.rules)
    order.shuffle(shuffled)
    again = evaluate(
        RuleSet(tuple(shuffled)), watcher=watcher, presentity=IDS[0], now=now, sphere=sphere
    )
    assert again.sub_handling == decision.sub_handling
    assert again.transformations == decision.transformations
    assert sorted(again.matched_rule_ids) == sorted(decision.matched_rule_ids)
    # The combined sub-handling is the maximum of the rules taken one by one.
    singles = [
        evaluate(RuleSet((r,)), watcher=watcher, presentity=IDS[0], now=now, sphere=sphere)
        for r in parsed.rules
    ]
    handlings = [s.sub_handling for s in singles if s.sub_handling is not None]
    expected = max(handlings, key=SUB_HANDLING_VALUES.index) if handlings else None
    assert decision.sub_handling == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_parse_rules_accepts_or_refuses_with_body_error(data: bytes) -> None:
    with contextlib.suppress(BodyError):
        parse_rules(data)


provides = st.builds(
    Provide,
    all=st.booleans(),
    occurrence_ids=st.frozensets(st.sampled_from(["bs35r9", "p1", "pc147", "nope"])),
    classes=st.frozensets(st.sampled_from(["email", "calendar", "desk", "public"])),
    device_ids=st.frozensets(st.sampled_from(["urn:device:phone-2", "urn:device:0003ba4811e3"])),
    service_uris=st.frozensets(st.sampled_from(["sip:someone@example.com", "mailto:x@y"])),
    service_uri_schemes=st.frozensets(st.sampled_from(["sip", "mailto", "im"])),
)
random_transformations = st.builds(
    Transformations,
    services=provides,
    persons=provides,
    devices=provides,
    all_attributes=st.booleans(),
    attributes=st.frozensets(st.sampled_from(ATTRIBUTES)),
    user_input=st.sampled_from(USER_INPUT_LEVELS),
    unknown_attributes=st.frozensets(
        st.sampled_from([(CIPID_NS, "homepage"), (FOO_NS, "foo"), (FOO_NS, "top")])
    ),
)


@settings(max_examples=200, deadline=None)
@given(random_transformations)
def test_filtering_always_leaves_a_valid_pidf(t: Transformations) -> None:
    out = filter_pidf(RPID_PIDF, t)
    root = validate_pidf(out)
    assert root.get("entity") == "pres:someone@example.com"
    kept, original = pidf_ids(out), pidf_ids(RPID_PIDF)
    assert kept.items() <= original.items()
    # A kept tuple keeps its basic status.
    before = tuple_statuses(RPID_PIDF)
    assert all(before[ident] == status for ident, status in tuple_statuses(out).items())
