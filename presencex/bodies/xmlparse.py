"""The one hardened XML parser of presencex.

Every XML body that reaches us from the network (PUBLISH, XCAP documents,
test clients reading NOTIFYs) goes through ``parse_xml``.
The few helpers the body formats share around it (reading stored
publications back, the aggregate's namespace map, quoting values in a
reason) live here too, so each format keeps one copy of them.

Facts and invariants:
- A DOCTYPE is refused outright, before libxml2 sees the document. None of
  our formats has a DTD (RFC 3863, 3858, 4235, 4479 are all XML Schema), and
  the DTD is where XXE (external entities: file reads, SSRF) and entity
  expansion bombs ("billion laughs") live. Refusing it is simpler and safer
  than trusting each parser flag to neutralise every entity trick.
- The parser is also configured defensively (no entity resolution, no
  network, no DTD loading, no huge_tree) in case a DOCTYPE ever slipped past
  the byte scan: two independent locks on the same door.
- Input must be UTF-8. RFC 3858 §4 and RFC 4235 §4 say their documents "MUST
  be encoded using UTF-8", and PIDF (RFC 3863 §4) documents are UTF-8 in
  practice. Forcing the decoder to UTF-8 also makes the byte-level DOCTYPE
  scan sound: a UTF-16 document cannot hide "<!DOCTYPE" from it, because
  it is then not well-formed and refused.
- Size, depth and element count are bounded (named constants below), so a
  hostile body costs at most a bounded amount of memory and CPU.
- Comments and processing instructions are dropped at parse time: they carry
  no presence state, and we must not relay a publisher's PIs to watchers.
- ``BodyError`` messages are one short printable line, fit for a SIP reason
  phrase (STYLE.md: ``BodyError`` becomes ``400`` with the parser's reason).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, Sequence

from lxml import etree

__all__ = [
    "DOCUMENT_STATES",
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "MAX_REASON_CHARS",
    "MAX_SHOWN_VALUE_CHARS",
    "BodyError",
    "merged_nsmap",
    "new_root",
    "parse_stored",
    "parse_xml",
    "serialize_xml",
    "show_value",
    "xml_text",
]

logger = logging.getLogger(__name__)

# Four times the largest SIP message that fits a UDP datagram (65535): room
# for TCP-borne bodies and for the aggregate of several publications that we
# re-parse when filtering, while keeping the parsed tree of a hostile body to
# a few megabytes.
MAX_BODY_BYTES = 256 * 1024

# PIDF with RPID nests about 6 levels (presence/person/activities/...), a
# dialog-info about 6 (dialog-info/dialog/local/target/param); 32 leaves room
# for nested extensions and still stops pathological nesting long before
# libxml2's own limit of 256 or Python recursion in callers that walk trees.
MAX_DEPTH = 32

# A busy shared-line dialog-info (dozens of dialogs of ~15 elements each) or
# a presentity with many devices stays well under 2000 elements; 10000 is
# generous for legitimate bodies and bounds the work of anything walking it.
MAX_ELEMENTS = 10_000

# SIP reason phrases are free text, but a long one is useless in logs and
# may push a response over the UDP size; the start of the parser message
# says everything useful.
MAX_REASON_CHARS = 160

# Values (ids, mostly) quoted in a reason phrase are cut to this many
# characters, so that one long id cannot push the rest of the reason out.
MAX_SHOWN_VALUE_CHARS = 40

# The ``state`` attribute of dialog-info (RFC 4235 §4.1) and watcherinfo
# (RFC 3858 §4.2) documents: the whole state, or only what changed.
DOCUMENT_STATES = frozenset({"full", "partial"})

_DOCTYPE = b"<!DOCTYPE"
_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
# lxml appends the position to its message; we put it in front instead.
_POSITION_SUFFIX = re.compile(r",? line \d+, column \d+$")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")
# Characters XML 1.0 §2.2 forbids anywhere in a document.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class BodyError(ValueError):
    """A body we refuse; ``str(e)`` is a short one-line reason for a 400."""

    def __init__(self, reason: str) -> None:
        super().__init__(_one_line(reason))


def _one_line(reason: str) -> str:
    reason = _UNPRINTABLE.sub(" ", reason).strip()
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 3] + "..."
    return reason


def show_value(value: str) -> str:
    """``value`` quoted for a ``BodyError`` reason, cut when it is long."""
    if len(value) > MAX_SHOWN_VALUE_CHARS:
        value = value[: MAX_SHOWN_VALUE_CHARS - 3] + "..."
    return repr(value)


class _PerThread(threading.local):
    """lxml parsers and XPath evaluators are not thread-safe: one of each per thread."""

    def __init__(self) -> None:
        self.parser = etree.XMLParser(
            encoding="utf-8",
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            # No xml:id hash table: nothing of ours looks ids up through it.
            collect_ids=False,
            attribute_defaults=False,
            strip_cdata=True,
        )
        self.count = etree.XPath("count(//*)")
        self.too_deep: dict[int, etree.XPath] = {}


_local = _PerThread()


def _too_deep(max_depth: int) -> etree.XPath:
    # An element at depth max_depth + 1 exists iff this path selects one; the
    # evaluation visits each element once, in C.
    cached = _local.too_deep.get(max_depth)
    if cached is None:
        cached = etree.XPath("boolean(" + "/*" * (max_depth + 1) + ")")
        _local.too_deep[max_depth] = cached
    return cached


def parse_xml(
    data: bytes,
    *,
    max_bytes: int = MAX_BODY_BYTES,
    max_depth: int = MAX_DEPTH,
    max_elements: int = MAX_ELEMENTS,
) -> etree._Element:
    """Parse an untrusted UTF-8 XML body; raise ``BodyError`` on anything unsafe or broken."""
    if len(data) > max_bytes:
        raise BodyError("document too large")
    if not data.strip():
        raise BodyError("empty body")
    # XML 1.0 §2.8: only the uppercase keyword opens a DOCTYPE, and in UTF-8
    # it is these exact bytes. A CDATA section or comment that merely quotes
    # them is refused too: no legitimate presence body does that.
    if _DOCTYPE in data:
        raise BodyError("DOCTYPE not allowed")
    try:
        root = etree.fromstring(data, _local.parser)
    except etree.XMLSyntaxError as e:
        line, column = e.position
        message = _POSITION_SUFFIX.sub("", e.msg or "syntax error")
        raise BodyError(f"not well-formed XML: line {line}, column {column}: {message}") from None
    except (etree.LxmlError, ValueError) as e:
        raise BodyError(f"not well-formed XML: {e}") from None
    # Second lock: the byte scan above should make this unreachable. libxml2
    # attaches an internal DTD node for any DOCTYPE, even "<!DOCTYPE a>".
    if root.getroottree().docinfo.internalDTD is not None:
        raise BodyError("DOCTYPE not allowed")
    count = _local.count(root)
    if not isinstance(count, float) or count > max_elements:
        raise BodyError("document has too many elements")
    if _too_deep(max_depth)(root) is not False:
        raise BodyError("document nested too deeply")
    return root


def serialize_xml(root: etree._Element) -> bytes:
    """UTF-8 bytes with an XML declaration.

    The declaration is written with double quotes, as Kamailio (libxml2's
    xmlDocDumpMemory) does: lxml's own uses single quotes, which is legal XML
    but trips the hand-written parsers of some phones.
    """
    return _XML_DECLARATION + etree.tostring(root, encoding="UTF-8", xml_declaration=False)


def xml_text(value: str) -> str:
    """``value`` without the characters XML 1.0 §2.2 cannot carry.

    Used for strings that come from SIP headers (display names may hold
    control characters through quoted-pair, RFC 3261 §25.1): lxml refuses
    them, and one odd watcher must not stop a document being built.
    """
    return _NOT_XML_CHAR.sub("", value)


def new_root(tag: str, nsmap: Mapping[str | None, str]) -> etree._Element:
    """A new document element declaring ``nsmap`` (None: the default namespace)."""
    # lxml-stubs 0.5 type nsmap as Mapping[str, str], but lxml takes None as
    # the default namespace's key, which every format of ours needs.
    return etree.Element(tag, nsmap=nsmap)  # type: ignore[arg-type]


def parse_stored(body: bytes, root_tag: str) -> etree._Element | None:
    """A stored publication parsed for aggregation, or None when it is unusable.

    Stored publications were validated on PUBLISH; one damaged row (a
    hand-edited database, a schema from an older version) must not stop
    the NOTIFYs that every other publication of the presentity deserves, so
    it is skipped and logged rather than raised.
    """
    try:
        root = parse_xml(body)
    except BodyError as e:
        logger.warning("skipping stored publication that no longer parses: %s", e)
        return None
    if root.tag != root_tag:
        logger.warning("skipping stored publication with root %s, not %s", root.tag, root_tag)
        return None
    return root


def merged_nsmap(roots: Sequence[etree._Element], default: str) -> dict[str | None, str]:
    """The namespace declarations to put on the root of an aggregate of ``roots``.

    ``roots`` are oldest → newest; ``default`` is the format's namespace.
    Declaring the publishers' prefixes on the new root lets lxml keep them
    when it moves elements over (it reuses an in-scope declaration of the
    same URI), so ``rpid:activities`` stays ``rpid:activities``. On a clash
    (one prefix, two URIs) the newest publication's binding is declared
    here and lxml re-declares the other URI where it is used: the prefix
    may change, the namespace never does.
    """
    nsmap: dict[str | None, str] = {None: default}
    for root in reversed(roots):
        for prefix, uri in root.nsmap.items():
            if prefix is not None and prefix not in nsmap:
                nsmap[prefix] = uri
    return nsmap
