"""pres-rules documents (RFC 5025) used by the authorization tests."""

from __future__ import annotations

HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<cr:ruleset xmlns:pr="urn:ietf:params:xml:ns:pres-rules" '
    'xmlns:cr="urn:ietf:params:xml:ns:common-policy">'
)
PROVIDE_ALL = (
    "<cr:transformations>"
    "<pr:provide-services><pr:all-services/></pr:provide-services>"
    "<pr:provide-persons><pr:all-persons/></pr:provide-persons>"
    "<pr:provide-devices><pr:all-devices/></pr:provide-devices>"
    "<pr:provide-all-attributes/>"
    "</cr:transformations>"
)


def rule(rule_id: str, watcher: str, handling: str, transformations: str = PROVIDE_ALL) -> str:
    return (
        f'<cr:rule id="{rule_id}"><cr:conditions><cr:identity><cr:one id="{watcher}"/>'
        f"</cr:identity></cr:conditions><cr:actions><pr:sub-handling>{handling}"
        f"</pr:sub-handling></cr:actions>{transformations}</cr:rule>"
    )


def ruleset(*rules: str) -> bytes:
    return (HEAD + "".join(rules) + "</cr:ruleset>").encode()
