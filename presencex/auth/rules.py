"""Presence authorization rules: RFC 4745 common policy + RFC 5025 pres-rules.

Pure code: bytes in (``parse_rules``), a frozen ``Decision`` out
(``evaluate``). No I/O, no clock: ``now`` and the presentity's sphere are
arguments.

Facts and invariants:
- Elements are recognised by namespace URI and local name, never by local
  name alone: ``cp:`` is urn:ietf:params:xml:ns:common-policy, ``pr:`` is
  urn:ietf:params:xml:ns:pres-rules. A ``provide-activities`` in a vendor's
  namespace is not ours, whatever its prefix. (Kamailio's presence_xml
  matches ``provide-*`` by element name and ignores namespaces.)
- A rule matches when every condition in it is TRUE (RFC 4745 §10.1); a rule
  without conditions matches every watcher, identified or not. A condition
  we do not know evaluates to FALSE (RFC 4745 §7), so such a rule never
  matches: ignoring it would grant more than its author wrote.
- Every matching rule counts (RFC 4745 §10.2): ``sub-handling`` takes the
  maximum of block(0) < confirm(10) < polite-block(20) < allow(30) (RFC 5025
  §3.2.1), booleans are OR'ed, sets are united, ``provide-user-input`` takes
  the maximum of false < bare < thresholds < full (RFC 5025 §3.3.2). Kamailio
  takes the first matching rule and skips rules without ``identity``.
- ``sphere`` (RFC 4745 §7.3) is TRUE when the presentity's current sphere is
  one of the tokens, compared exactly; an undefined sphere (RFC 5025 §3.1.2:
  none published, or inconsistent) makes it FALSE. ``validity`` (§7.4) is
  TRUE for from <= now < until in one of its pairs.
- A ``one`` or ``many`` carrying an extension child we do not know matches
  nobody: the extension could only have narrowed it.
- Permissions are privacy-safe (RFC 4745 §10): what no matching rule grants
  is denied, so an action or transformation we do not understand is ignored
  (it can only have granted something). No matching rule, or no matching
  rule with a ``sub-handling``, gives ``sub_handling=None``; the caller keeps
  such a watcher pending, as RFC 5025 §3.2.1 does with ``confirm``.
- What the schemas make mandatory and what we would otherwise have to guess
  (a rule without id, ``one`` without id, an ``except`` naming nothing, an
  unknown ``sub-handling`` value, a ``validity`` that is not from/until
  pairs or a dateTime without a timezone) raises ``BodyError``: the caller
  treats a refused document as no document, which grants nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal, get_args
from urllib.parse import unquote

from lxml import etree

from presencex.bodies.xmlparse import BodyError, parse_xml
from presencex.sip.errors import SipError
from presencex.sip.uri import parse_uri

__all__ = [
    "ATTRIBUTES",
    "CP_NS",
    "PR_NS",
    "SUB_HANDLING_VALUES",
    "USER_INPUT_LEVELS",
    "Attribute",
    "BodyError",
    "Conditions",
    "Decision",
    "Identity",
    "Many",
    "Provide",
    "Rule",
    "RuleSet",
    "SubHandling",
    "Transformations",
    "UserInput",
    "evaluate",
    "identity_key",
    "parse_datetime",
    "parse_rules",
    "uri_key",
]

CP_NS = "urn:ietf:params:xml:ns:common-policy"
PR_NS = "urn:ietf:params:xml:ns:pres-rules"


def _cp(name: str) -> str:
    return f"{{{CP_NS}}}{name}"


def _pr(name: str) -> str:
    return f"{{{PR_NS}}}{name}"


SubHandling = Literal["block", "confirm", "polite-block", "allow"]
# RFC 5025 §3.2.1 gives each value an integer so that RFC 4745 §10.2 can
# combine them by taking the maximum; the tuple is in that order.
SUB_HANDLING_VALUES: tuple[SubHandling, ...] = get_args(SubHandling)

UserInput = Literal["false", "bare", "thresholds", "full"]
# RFC 5025 §3.3.2: an enumeration combined by its maximum, in this order.
USER_INPUT_LEVELS: tuple[UserInput, ...] = get_args(UserInput)

# The boolean presence-attribute permissions of RFC 5025 §3.3.2, named after
# the attribute each one provides (``provide-<name>``).
Attribute = Literal[
    "activities",
    "class",
    "deviceID",
    "mood",
    "place-is",
    "place-type",
    "privacy",
    "relationship",
    "status-icon",
    "sphere",
    "time-offset",
    "note",
]
ATTRIBUTES: tuple[Attribute, ...] = get_args(Attribute)
_PROVIDE_ATTRIBUTE: dict[str, Attribute] = {_pr(f"provide-{name}"): name for name in ATTRIBUTES}


# ---------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class Many:
    """``<many>`` (RFC 4745 §7.1.3): every authenticated identity, or every
    one in ``domain``, except the listed identities and domains."""

    domain: str | None  # lower-cased; None matches any authenticated identity
    except_ids: frozenset[str] = frozenset()  # identity keys (see identity_key)
    except_domains: frozenset[str] = frozenset()  # lower-cased


@dataclass(frozen=True, slots=True)
class Identity:
    """One ``<identity>`` condition: TRUE if any child matches (RFC 4745 §7.1.1)."""

    ones: frozenset[str] = frozenset()  # identity keys of the <one id=...> children
    manys: tuple[Many, ...] = ()


@dataclass(frozen=True, slots=True)
class Conditions:
    """The conditions of one rule, all of which must hold (RFC 4745 §10.1).

    The schema lets each condition appear more than once; each occurrence is
    one more term of the AND. ``unsupported`` holds the Clark names of
    conditions we do not know: one is enough for the rule never to match.
    """

    identities: tuple[Identity, ...] = ()
    spheres: tuple[frozenset[str], ...] = ()
    validities: tuple[tuple[tuple[float, float], ...], ...] = ()  # [from, until) in epoch seconds
    unsupported: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Provide:
    """A ``provide-services``/``-persons``/``-devices`` selection (RFC 5025 §3.3.1).

    A data component is provided if ``all`` or if any criterion selects it.
    ``device_ids`` only applies to devices, ``service_uris`` and
    ``service_uri_schemes`` only to services (tuples).
    """

    all: bool = False
    occurrence_ids: frozenset[str] = frozenset()
    classes: frozenset[str] = frozenset()
    device_ids: frozenset[str] = frozenset()
    service_uris: frozenset[str] = frozenset()  # uri_key() of each <service-uri>
    service_uri_schemes: frozenset[str] = frozenset()  # lower-cased

    def union(self, other: Provide) -> Provide:
        """RFC 4745 §10.2: sets combine by union."""
        return Provide(
            all=self.all or other.all,
            occurrence_ids=self.occurrence_ids | other.occurrence_ids,
            classes=self.classes | other.classes,
            device_ids=self.device_ids | other.device_ids,
            service_uris=self.service_uris | other.service_uris,
            service_uri_schemes=self.service_uri_schemes | other.service_uri_schemes,
        )


_NOTHING = Provide()


@dataclass(frozen=True, slots=True)
class Transformations:
    """What a watcher may see (RFC 5025 §3.3). The default provides nothing.

    Hashable, so filtered bodies can be cached per (aggregate, transformations).
    """

    services: Provide = _NOTHING
    persons: Provide = _NOTHING
    devices: Provide = _NOTHING
    all_attributes: bool = False
    attributes: frozenset[Attribute] = frozenset()
    user_input: UserInput = "false"
    unknown_attributes: frozenset[tuple[str, str]] = frozenset()  # (namespace, local name)

    def provides(self, attribute: Attribute) -> bool:
        return self.all_attributes or attribute in self.attributes

    @property
    def user_input_level(self) -> UserInput:
        """``provide-all-attributes`` includes the full user-input."""
        return "full" if self.all_attributes else self.user_input

    def combine(self, other: Transformations) -> Transformations:
        """RFC 4745 §10.2: booleans OR, sets union, enumerations maximum."""
        return Transformations(
            services=self.services.union(other.services),
            persons=self.persons.union(other.persons),
            devices=self.devices.union(other.devices),
            all_attributes=self.all_attributes or other.all_attributes,
            attributes=self.attributes | other.attributes,
            user_input=max(self.user_input, other.user_input, key=USER_INPUT_LEVELS.index),
            unknown_attributes=self.unknown_attributes | other.unknown_attributes,
        )


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    conditions: Conditions = field(default_factory=Conditions)
    sub_handling: SubHandling | None = None
    transformations: Transformations = field(default_factory=Transformations)


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()

    @property
    def has_sphere_conditions(self) -> bool:
        """Whether a change of the presentity's sphere can change a decision."""
        return any(rule.conditions.spheres for rule in self.rules)


@dataclass(frozen=True, slots=True)
class Decision:
    """The combined result of every matching rule (RFC 4745 §10.2).

    ``sub_handling`` is None when no matching rule has one (in particular
    when no rule matches): the watcher stays pending.
    """

    sub_handling: SubHandling | None
    transformations: Transformations
    matched_rule_ids: tuple[str, ...]


# ------------------------------------------------------------- identities

# RFC 3966 §5.1.1 visual separators carry no meaning in a telephone number.
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")


@dataclass(frozen=True, slots=True)
class _Who:
    key: str
    domain: str | None


def _who(text: str) -> _Who | None:
    """The comparable form of an identity URI, and its domain; None if it has none.

    SIP and SIPS URIs compare as addresses of record, the way RFC 3261 §10.3
    compares them: user (case-sensitive, %-escapes resolved per §19.1.4) and
    host (case-insensitive); port, parameters and headers do not identify a
    user. Our choice beyond the RFCs: ``sips:`` and ``sip:`` name the same
    user, since a watcher should not lose (or gain) access by using TLS.
    ``tel:`` numbers compare without visual separators. Other schemes
    (``pres:``, ``im:``, ``mailto:``) compare with a lower-cased scheme and
    host. A bare ``user@host`` (the form of RFC 4745's early drafts) is read
    as ``sip:``.
    """
    text = text.strip()
    if not text:
        return None
    scheme, colon, rest = text.partition(":")
    if not colon or "@" in scheme:
        scheme, rest = "sip", text
    scheme = scheme.lower()
    if scheme in ("sip", "sips"):
        try:
            uri = parse_uri(f"sip:{rest}")
        except SipError:
            return None
        host = _domain(uri.host)
        if uri.user is None:
            return _Who(f"sip:{host}", host)
        return _Who(f"sip:{unquote(uri.user)}@{host}", host)
    if scheme == "tel":
        number = rest.partition(";")[0].translate(_VISUAL_SEPARATORS).lower()
        return _Who(f"tel:{number}", None) if number else None
    user, at, host = rest.rpartition("@")
    if at and user and host:
        host = _domain(host)
        return _Who(f"{scheme}:{user}@{host}", host)
    return _Who(f"{scheme}:{rest}", None)


def identity_key(uri: str) -> str | None:
    """The form in which ``evaluate`` compares identities (see ``_who``)."""
    who = _who(uri)
    return None if who is None else who.key


def _domain(text: str) -> str:
    # RFC 4745 §7.1.3: domains are DNS names, which compare case-insensitively.
    return text.strip().lower().rstrip(".")


# --------------------------------------------------------------- parsing


def _children(element: etree._Element) -> Iterator[etree._Element]:
    # Comments and PIs are removed by the parser; this skips anything else
    # that is not an element, so every ``tag`` below is a str.
    for child in element:
        if isinstance(child.tag, str):
            yield child


def _local(tag: str) -> str:
    return etree.QName(tag).localname


def _required(element: etree._Element, attribute: str) -> str:
    value = element.get(attribute)
    if value is None or not value.strip():
        raise BodyError(f"{_local(element.tag)} without {attribute}")
    return value.strip()


def _text(element: etree._Element) -> str:
    return (element.text or "").strip()


def parse_rules(data: bytes) -> RuleSet:
    """Parse a pres-rules document (RFC 5025 §3 on RFC 4745 §6)."""
    root = parse_xml(data)
    if root.tag != _cp("ruleset"):
        raise BodyError(f"root element must be {_cp('ruleset')}")
    rules: list[Rule] = []
    seen: set[str] = set()
    for child in _children(root):
        # RFC 4745 §6: a ruleset holds rules; anything else is not ours.
        if child.tag != _cp("rule"):
            continue
        rule = _parse_rule(child)
        # RFC 4745 §6.1: the id identifies the rule within the document.
        if rule.id in seen:
            raise BodyError(f"duplicate rule id {rule.id[:40]!r}")
        seen.add(rule.id)
        rules.append(rule)
    return RuleSet(tuple(rules))


def _one_part(rule: etree._Element, name: str) -> etree._Element | None:
    parts = [child for child in _children(rule) if child.tag == _cp(name)]
    if len(parts) > 1:
        raise BodyError(f"rule with more than one {name}")
    return parts[0] if parts else None


def _parse_rule(element: etree._Element) -> Rule:
    rule_id = _required(element, "id")
    conditions = _one_part(element, "conditions")
    actions = _one_part(element, "actions")
    transformations = _one_part(element, "transformations")
    return Rule(
        id=rule_id,
        conditions=Conditions() if conditions is None else _parse_conditions(conditions),
        sub_handling=None if actions is None else _parse_actions(actions),
        transformations=(
            Transformations()
            if transformations is None
            else _parse_transformations(transformations)
        ),
    )


def _parse_conditions(element: etree._Element) -> Conditions:
    identities: list[Identity] = []
    spheres: list[frozenset[str]] = []
    validities: list[tuple[tuple[float, float], ...]] = []
    unsupported: list[str] = []
    for child in _children(element):
        tag: str = child.tag
        if tag == _cp("identity"):
            identities.append(_parse_identity(child))
        elif tag == _cp("sphere"):
            # RFC 4745 §7.3: a space-separated list of sphere tokens.
            spheres.append(frozenset(_required(child, "value").split()))
        elif tag == _cp("validity"):
            validities.append(_parse_validity(child))
        else:
            # RFC 4745 §7: an unknown condition evaluates to FALSE.
            unsupported.append(tag)
    return Conditions(tuple(identities), tuple(spheres), tuple(validities), tuple(unsupported))


def _parse_identity(element: etree._Element) -> Identity:
    ones: set[str] = set()
    manys: list[Many] = []
    for child in _children(element):
        if child.tag == _cp("one"):
            who = _who(_required(child, "id"))
            # An extension inside <one> could only narrow it; not knowing
            # what it says, we let the child match nobody (privacy-safe).
            if who is not None and not _has_extensions(child, ()):
                ones.add(who.key)
        elif child.tag == _cp("many"):
            many = _parse_many(child)
            if many is not None:
                manys.append(many)
        # RFC 4745 §7.1.1: other children of <identity> evaluate to FALSE.
    return Identity(frozenset(ones), tuple(manys))


def _has_extensions(element: etree._Element, known: Iterable[str]) -> bool:
    known = set(known)
    return any(child.tag not in known for child in _children(element))


def _parse_many(element: etree._Element) -> Many | None:
    domain = element.get("domain")
    except_ids: set[str] = set()
    except_domains: set[str] = set()
    for child in _children(element):
        if child.tag != _cp("except"):
            continue
        ident, except_domain = child.get("id"), child.get("domain")
        if not (ident and ident.strip()) and not (except_domain and except_domain.strip()):
            # Ignoring it would widen the <many>: refuse the document.
            raise BodyError("except without id or domain")
        if ident and ident.strip():
            who = _who(ident)
            if who is not None:
                except_ids.add(who.key)
        if except_domain and except_domain.strip():
            except_domains.add(_domain(except_domain))
    if domain is not None and not _domain(domain):
        # Read as <many/> it would admit everybody: refuse the document.
        raise BodyError("many with an empty domain")
    if _has_extensions(element, (_cp("except"),)):
        return None
    return Many(
        None if domain is None else _domain(domain),
        frozenset(except_ids),
        frozenset(except_domains),
    )


# xs:dateTime with the timezone RFC 4745 §7.4 (erratum 1455) makes mandatory.
_DATETIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", re.ASCII
)
# xs:dateTime allows offsets of at most 14 hours.
_MAX_OFFSET = timedelta(hours=14)


def parse_datetime(text: str) -> float:
    """An xs:dateTime with a timezone, as epoch seconds; ``BodyError`` otherwise."""
    match = _DATETIME.fullmatch(text.strip())
    if match is None:
        raise BodyError(f"bad dateTime {text.strip()[:40]!r} (a timezone is required)")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction, zone = match.group(7), match.group(8)
    try:
        if zone == "Z":
            tz = UTC
        else:
            offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
            if offset > _MAX_OFFSET or int(zone[4:6]) > 59:
                raise ValueError("offset out of range")
            tz = timezone(-offset if zone[0] == "-" else offset)
        # XML Schema allows 24:00:00 for the midnight that ends the day.
        end_of_day = (hour, minute, second) == (24, 0, 0) and not (fraction or "").strip(".0")
        when = datetime(year, month, day, 0 if end_of_day else hour, minute, second, tzinfo=tz)
    except ValueError:
        raise BodyError(f"bad dateTime {text.strip()[:40]!r}") from None
    # The day is added to the epoch seconds, not to the datetime: the
    # midnight that ends 9999-12-31 ("for ever" in some clients' documents)
    # lies past datetime.max and would raise OverflowError.
    extra = 86400.0 if end_of_day else 0.0
    return when.timestamp() + extra + (float(fraction) if fraction else 0.0)


def _parse_validity(element: etree._Element) -> tuple[tuple[float, float], ...]:
    """RFC 4745 §7.4: one or more <from>/<until> pairs, in that order."""
    parts = list(_children(element))
    if not parts or len(parts) % 2:
        raise BodyError("validity must hold from/until pairs")
    intervals: list[tuple[float, float]] = []
    for start, end in zip(parts[::2], parts[1::2], strict=True):
        if start.tag != _cp("from") or end.tag != _cp("until"):
            raise BodyError("validity must hold from/until pairs")
        intervals.append((parse_datetime(_text(start)), parse_datetime(_text(end))))
    return tuple(intervals)


def _parse_actions(element: etree._Element) -> SubHandling | None:
    handling: SubHandling | None = None
    for child in _children(element):
        # Other actions are ignored: not granting them is privacy-safe.
        if child.tag != _pr("sub-handling"):
            continue
        value = _text(child)
        if value not in SUB_HANDLING_VALUES:
            raise BodyError(f"bad sub-handling {value[:20]!r}")
        handling = _max_handling(handling, value)
    return handling


def _max_handling(a: SubHandling | None, b: SubHandling | None) -> SubHandling | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b, key=SUB_HANDLING_VALUES.index)


def _boolean(element: etree._Element) -> bool:
    # xs:boolean (XML Schema Part 2 §3.2.2): true, false, 1, 0.
    value = _text(element)
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise BodyError(f"{_local(element.tag)} must be true or false")


# The criteria each provide-* element may hold (RFC 5025 §3.3.1); the field of
# Provide that each one fills.
_CRITERIA = {
    "provide-services": {
        _pr("service-uri"): "service_uris",
        _pr("service-uri-scheme"): "service_uri_schemes",
        _pr("occurrence-id"): "occurrence_ids",
        _pr("class"): "classes",
    },
    "provide-persons": {
        _pr("occurrence-id"): "occurrence_ids",
        _pr("class"): "classes",
    },
    "provide-devices": {
        _pr("deviceID"): "device_ids",
        _pr("occurrence-id"): "occurrence_ids",
        _pr("class"): "classes",
    },
}
_ALL = {
    "provide-services": _pr("all-services"),
    "provide-persons": _pr("all-persons"),
    "provide-devices": _pr("all-devices"),
}
# The schema of an early pres-rules draft spelled it "occurence-id", and some
# clients still write that; it can only select what its author named.
_OCCURENCE_TYPO = _pr("occurence-id")


def _parse_provide(element: etree._Element, kind: str) -> Provide:
    criteria = _CRITERIA[kind]
    everything = False
    values: dict[str, set[str]] = {name: set() for name in criteria.values()}
    for child in _children(element):
        tag: str = child.tag
        if tag == _ALL[kind]:
            everything = True
            continue
        if tag == _OCCURENCE_TYPO:
            tag = _pr("occurrence-id")
        name = criteria.get(tag)
        value = _text(child)
        if name is None or not value:
            continue  # an unknown criterion selects nothing (privacy-safe)
        if name == "service_uris":
            value = uri_key(value)
        elif name == "service_uri_schemes":
            value = value.lower()
        values[name].add(value)

    def chosen(name: str) -> frozenset[str]:
        return frozenset(values.get(name, ()))

    return Provide(
        all=everything,
        occurrence_ids=chosen("occurrence_ids"),
        classes=chosen("classes"),
        device_ids=chosen("device_ids"),
        service_uris=chosen("service_uris"),
        service_uri_schemes=chosen("service_uri_schemes"),
    )


def _parse_transformations(element: etree._Element) -> Transformations:
    result = Transformations()
    for child in _children(element):
        tag: str = child.tag
        local = _local(tag)
        if tag.startswith(f"{{{PR_NS}}}") and local in _CRITERIA:
            provided = _parse_provide(child, local)
            part = Transformations(
                services=provided if local == "provide-services" else _NOTHING,
                persons=provided if local == "provide-persons" else _NOTHING,
                devices=provided if local == "provide-devices" else _NOTHING,
            )
        elif tag == _pr("provide-all-attributes"):
            part = Transformations(all_attributes=True)
        elif tag in _PROVIDE_ATTRIBUTE:
            granted = frozenset({_PROVIDE_ATTRIBUTE[tag]}) if _boolean(child) else frozenset()
            part = Transformations(attributes=granted)
        elif tag == _pr("provide-user-input"):
            level = _text(child)
            if level not in USER_INPUT_LEVELS:
                raise BodyError(f"bad provide-user-input {level[:20]!r}")
            part = Transformations(user_input=level)
        elif tag == _pr("provide-unknown-attribute"):
            key = (_required(child, "ns"), _required(child, "name"))
            part = Transformations(
                unknown_attributes=frozenset({key}) if _boolean(child) else frozenset()
            )
        else:
            continue  # unknown transformation: not granted (privacy-safe)
        # Within one rule, repeated permissions combine as across rules.
        result = result.combine(part)
    return result


def uri_key(text: str) -> str:
    """A service URI in comparable form (RFC 5025 §3.3.1 <service-uri>).

    SIP URIs compare by scheme, user, lower-cased host and port, without
    parameters (RFC 3261 §19.1.4 makes most parameters optional in the
    comparison); other URIs by a lower-cased scheme and the rest as written.
    """
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if colon and scheme in ("sip", "sips"):
        try:
            uri = parse_uri(text)
        except SipError:
            return f"{scheme}:{rest}"
        port = "" if uri.port is None else f":{uri.port}"
        user = "" if uri.user is None else f"{unquote(uri.user)}@"
        return f"{scheme}:{user}{uri.host.lower()}{port}"
    return f"{scheme}:{rest}" if colon else text


# ------------------------------------------------------------- evaluation


def evaluate(
    rules: RuleSet | None,
    *,
    watcher: str,
    presentity: str,
    now: float,
    sphere: str | None,
    check_sphere: bool = True,
) -> Decision:
    """Combine every rule of ``rules`` that matches this watcher now (RFC 4745 §10).

    ``watcher`` is the watcher's authenticated identity (RFC 5025 §3.1.1);
    an empty or unusable one matches no ``identity`` condition. ``now`` is
    epoch seconds. ``sphere`` is the presentity's current sphere, or None
    when it is undefined (RFC 5025 §3.1.2: none published, or inconsistent
    values), in which case every ``sphere`` condition is FALSE: the
    presentity is in no sphere a rule could name. ``check_sphere=False``
    (Kamailio's ``enable_sphere_check = 0``) skips sphere conditions: they
    hold whatever the sphere.  ``presentity`` is not consulted by any
    condition of RFC 4745/5025; it is taken so that every caller passes the
    full context.
    """
    del presentity  # see the docstring
    if rules is None:
        return Decision(None, Transformations(), ())
    who = _who(watcher)
    handling: SubHandling | None = None
    transformations = Transformations()
    matched: list[str] = []
    for rule in rules.rules:
        if not _matches(rule.conditions, who, now, sphere, check_sphere):
            continue
        matched.append(rule.id)
        handling = _max_handling(handling, rule.sub_handling)
        transformations = transformations.combine(rule.transformations)
    return Decision(handling, transformations, tuple(matched))


def _matches(
    conditions: Conditions, who: _Who | None, now: float, sphere: str | None, check_sphere: bool
) -> bool:
    if conditions.unsupported:
        return False
    if not all(_identity_matches(identity, who) for identity in conditions.identities):
        return False
    # RFC 4745 §7.3: TRUE if the presentity is currently in one of the spheres.
    # With Kamailio's enable_sphere_check off, sphere conditions are not
    # evaluated at all (they hold), as in presence_xml.
    if check_sphere and any(
        sphere is None or sphere not in tokens for tokens in conditions.spheres
    ):
        return False
    # RFC 4745 §7.4: TRUE if from <= now < until for one of the pairs.
    return all(
        any(start <= now < end for start, end in intervals) for intervals in conditions.validities
    )


def _identity_matches(identity: Identity, who: _Who | None) -> bool:
    # RFC 4745 §7.1: only authenticated identities are matched.
    if who is None:
        return False
    if who.key in identity.ones:
        return True
    return any(_many_matches(many, who) for many in identity.manys)


def _many_matches(many: Many, who: _Who) -> bool:
    # RFC 4745 §7.1.3.1-3: <many/> is any authenticated identity, <many
    # domain> any in that domain; <except> removes identities and domains.
    if many.domain is not None and who.domain != many.domain:
        return False
    if who.key in many.except_ids:
        return False
    return who.domain is None or who.domain not in many.except_domains
