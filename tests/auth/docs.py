"""Rule and PIDF documents for the authorization tests.

The RFC examples are transcribed from the RFCs named beside each one; the
others are hand-made around them.
"""

from __future__ import annotations

CP = "urn:ietf:params:xml:ns:common-policy"
PR = "urn:ietf:params:xml:ns:pres-rules"
CIPID_NS = "urn:ietf:params:xml:ns:pidf:cipid"
FOO_NS = "urn:vendor-specific:foo-namespace"

# RFC 5025 §7 (Example Document): user@example.com may subscribe and sees
# the sip: and mailto: services, every person, activities, bare user-input
# and the vendor's "foo" attribute.
RFC5025_EXAMPLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns="urn:ietf:params:xml:ns:pres-rules"
 xmlns:pr="urn:ietf:params:xml:ns:pres-rules"
 xmlns:cr="urn:ietf:params:xml:ns:common-policy">
 <cr:rule id="a">
  <cr:conditions>
   <cr:identity>
    <cr:one id="sip:user@example.com"/>
   </cr:identity>
  </cr:conditions>
  <cr:actions>
   <pr:sub-handling>allow</pr:sub-handling>
  </cr:actions>
  <cr:transformations>
   <pr:provide-services>
     <pr:service-uri-scheme>sip</pr:service-uri-scheme>
     <pr:service-uri-scheme>mailto</pr:service-uri-scheme>
   </pr:provide-services>
   <pr:provide-persons>
     <pr:all-persons/>
   </pr:provide-persons>
   <pr:provide-activities>true</pr:provide-activities>
   <pr:provide-user-input>bare</pr:provide-user-input>
   <pr:provide-unknown-attribute
    ns="urn:vendor-specific:foo-namespace"
    name="foo">true</pr:provide-unknown-attribute>
  </cr:transformations>
 </cr:rule>
</cr:ruleset>
"""

# RFC 4745 §7.1.2: one entity per <one>, in several URI schemes.
RFC4745_ONE = """
<identity>
  <one id="sip:alice@example.com"/>
  <one id="tel:+1-212-555-1234"/>
  <one id="mailto:bob@example.net"/>
</identity>
"""

# RFC 4745 §7.1.3.2: everybody except two domains and some identities.
RFC4745_MANY_EXCEPT = """
<identity>
  <many>
    <except domain="example.com"/>
    <except domain="example.org"/>
    <except id="sip:alice@bad.example.net"/>
    <except id="sip:bob@good.example.net"/>
    <except id="tel:+1-212-555-1234"/>
    <except id="sip:alice@example.com"/>
  </many>
</identity>
"""

# RFC 4745 §7.1.3.3: everybody in example.com except two identities.
RFC4745_MANY_DOMAIN_EXCEPT = """
<identity>
  <many domain="example.com">
    <except id="sip:alice@example.com"/>
    <except id="sip:bob@example.com"/>
  </many>
</identity>
"""

# RFC 4745 §7.4: a validity window given in a -05:00 timezone.
RFC4745_VALIDITY = """
<validity>
  <from>2003-08-15T10:20:00.000-05:00</from>
  <until>2003-09-15T10:20:00.000-05:00</until>
</validity>
"""

# RFC 4745 §11 style ruleset in the default namespace: sphere, identity and
# a validity window together in one rule (all must hold).
RFC4745_RULESET = b"""<?xml version="1.0" encoding="UTF-8"?>
<ruleset xmlns="urn:ietf:params:xml:ns:common-policy">
  <rule id="f3g44r1">
    <conditions>
      <sphere value="work"/>
      <identity>
        <one id="sip:alice@example.com"/>
      </identity>
      <validity>
        <from>2003-12-24T17:00:00+01:00</from>
        <until>2003-12-24T19:00:00+01:00</until>
      </validity>
    </conditions>
    <actions/>
    <transformations/>
  </rule>
</ruleset>
"""


def ruleset(*rules: str) -> bytes:
    """A pres-rules document with ``cr:`` and ``pr:`` prefixes."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<cr:ruleset xmlns:cr="{CP}" xmlns:pr="{PR}">' + "".join(rules) + "</cr:ruleset>"
    ).encode()


def rule(
    rule_id: str,
    *,
    conditions: str | None = None,
    handling: str | None = None,
    transformations: str = "",
    actions: str = "",
) -> str:
    """One rule; ``conditions`` None leaves the element out (matches everyone)."""
    parts = [f'<cr:rule id="{rule_id}">']
    if conditions is not None:
        parts.append(f"<cr:conditions>{conditions}</cr:conditions>")
    if handling is not None or actions:
        sub = f"<pr:sub-handling>{handling}</pr:sub-handling>" if handling is not None else ""
        parts.append(f"<cr:actions>{sub}{actions}</cr:actions>")
    if transformations:
        parts.append(f"<cr:transformations>{transformations}</cr:transformations>")
    parts.append("</cr:rule>")
    return "".join(parts)


def default_ns_ruleset(conditions: str, handling: str = "allow", rule_id: str = "r1") -> bytes:
    """One rule whose conditions are written in the default (common-policy) namespace."""
    return (
        f'<ruleset xmlns="{CP}" xmlns:pr="{PR}"><rule id="{rule_id}">'
        f"<conditions>{conditions}</conditions>"
        f"<actions><pr:sub-handling>{handling}</pr:sub-handling></actions>"
        "</rule></ruleset>"
    ).encode()


def one(*ids: str) -> str:
    return "<cr:identity>" + "".join(f'<cr:one id="{i}"/>' for i in ids) + "</cr:identity>"


# An RPID/data-model document after the examples of RFC 4480 §4 and RFC 4479
# §4: three services (im:, mailto: for an assistant, mailto: of class
# "email"), one device with user-input and a note, one person with every
# RPID attribute RFC 5025 §3.3.2 names, a CIPID homepage and a vendor
# element, and a status extension after RFC 3863 §6.
RPID_PIDF = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
   xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
   xmlns:r="urn:ietf:params:xml:ns:pidf:rpid"
   xmlns:c="urn:ietf:params:xml:ns:pidf:cipid"
   xmlns:foo="urn:vendor-specific:foo-namespace"
   xmlns:myex="http://id.example.com/presence/"
   entity="pres:someone@example.com">
  <tuple id="bs35r9">
    <status>
      <basic>open</basic>
      <myex:location>home</myex:location>
    </status>
    <dm:deviceID>urn:device:0003ba4811e3</dm:deviceID>
    <r:relationship><r:self/></r:relationship>
    <r:service-class><r:electronic/></r:service-class>
    <r:status-icon>http://example.com/im.png</r:status-icon>
    <r:privacy><r:text/></r:privacy>
    <contact priority="0.8">im:someone@mobilecarrier.net</contact>
    <note xml:lang="en">Don't Disturb Please!</note>
    <note xml:lang="fr">Ne derangez pas, s'il vous plait</note>
    <timestamp>2005-10-27T16:49:29Z</timestamp>
  </tuple>
  <tuple id="ty4658">
    <status><basic>open</basic></status>
    <r:relationship><r:assistant/></r:relationship>
    <contact priority="1.0">mailto:secretary@example.com</contact>
  </tuple>
  <tuple id="eg92n8">
    <status><basic>open</basic></status>
    <r:class>email</r:class>
    <contact priority="1.0">mailto:someone@example.com</contact>
  </tuple>
  <tuple id="sp0001">
    <status><basic>closed</basic></status>
    <contact>sip:someone@Example.COM;transport=tcp</contact>
  </tuple>
  <note>I'll be in Tokyo next week</note>
  <dm:person id="p1">
    <r:activities from="2005-05-30T12:00:00+05:00" until="2005-05-30T17:00:00+05:00">
      <r:note>Far away</r:note>
      <r:away/>
    </r:activities>
    <r:class>calendar</r:class>
    <r:mood><r:angry/><r:other>brooding</r:other></r:mood>
    <r:place-is><r:audio><r:noisy/></r:audio></r:place-is>
    <r:place-type><r:residence/></r:place-type>
    <r:privacy><r:unknown/></r:privacy>
    <r:sphere>bowling league</r:sphere>
    <r:status-icon>http://example.com/mail.png</r:status-icon>
    <r:time-offset>-240</r:time-offset>
    <r:user-input idle-threshold="600" last-input="2005-05-30T16:00:00+05:00">idle</r:user-input>
    <c:homepage>http://example.com/~someone</c:homepage>
    <foo:foo>bar</foo:foo>
    <dm:note>Scoring 120</dm:note>
    <dm:timestamp>2005-05-30T16:09:44+05:00</dm:timestamp>
  </dm:person>
  <dm:person id="p2">
    <r:class>public</r:class>
    <r:activities><r:busy/></r:activities>
  </dm:person>
  <dm:device id="pc147">
    <r:user-input idle-threshold="600" last-input="2004-10-21T13:20:00.000-05:00">idle</r:user-input>
    <r:class>desk</r:class>
    <dm:deviceID>urn:device:0003ba4811e3</dm:deviceID>
    <dm:note>PC</dm:note>
  </dm:device>
  <dm:device id="ph2">
    <dm:deviceID>urn:device:phone-2</dm:deviceID>
  </dm:device>
  <foo:top>presence-level vendor data</foo:top>
</presence>
"""
