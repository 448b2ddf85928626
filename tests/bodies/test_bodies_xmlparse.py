"""The hardened parser: hostile XML is refused with a short reason, never obeyed.

File names carry a ``bodies`` prefix because tests/ has no packages: pytest
needs every test module's basename to be unique across the tree.
"""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from presencex.bodies import xmlparse
from presencex.bodies.xmlparse import (
    MAX_BODY_BYTES,
    MAX_DEPTH,
    MAX_ELEMENTS,
    MAX_REASON_CHARS,
    BodyError,
    parse_xml,
    serialize_xml,
    xml_text,
)

PASSWD_MARKER = b"root:"

XXE_FILE = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE presence [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@example.com">
  <tuple id="t1"><status><basic>open</basic></status><note>&xxe;</note></tuple>
</presence>"""

XXE_PARAMETER = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY % ext SYSTEM "file:///etc/passwd"> %ext;]>
<r/>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE presence SYSTEM "http://127.0.0.1:9/evil.dtd">
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@example.com"/>"""

XINCLUDE = b"""<presence xmlns="urn:ietf:params:xml:ns:pidf"
  xmlns:xi="http://www.w3.org/2001/XInclude" entity="sip:a@example.com">
  <xi:include href="file:///etc/passwd" parse="text"/>
</presence>"""


def nested(depth: int) -> bytes:
    return b"<a>" * depth + b"</a>" * depth


def reason(data: bytes) -> str:
    with pytest.raises(BodyError) as info:
        parse_xml(data)
    return str(info.value)


def test_parses_a_plain_document() -> None:
    root = parse_xml(b'<?xml version="1.0" encoding="UTF-8"?><a xmlns="urn:x"><b>t</b></a>')
    assert root.tag == "{urn:x}a"
    assert root[0].text == "t"


def test_accepts_utf8_bom_and_non_ascii_text() -> None:
    root = parse_xml("\ufeff<a>Ümlaut ☎</a>".encode())
    assert root.text == "Ümlaut ☎"


def test_drops_comments_and_processing_instructions() -> None:
    root = parse_xml(b"<a><!-- secret --><?app do-something?><b/></a>")
    assert [child.tag for child in root] == ["b"]


@pytest.mark.parametrize(
    "data",
    [XXE_FILE, XXE_PARAMETER, BILLION_LAUGHS, EXTERNAL_DTD, b"<!DOCTYPE a><a/>"],
    ids=["xxe-file", "xxe-parameter-entity", "billion-laughs", "external-dtd", "bare-doctype"],
)
def test_any_doctype_is_refused(data: bytes) -> None:
    assert reason(data) == "DOCTYPE not allowed"


@pytest.mark.parametrize(
    "data",
    [XXE_FILE, XXE_PARAMETER, BILLION_LAUGHS, EXTERNAL_DTD],
    ids=["xxe", "param", "lol", "dtd"],
)
def test_parser_flags_hold_even_if_the_byte_scan_is_bypassed(
    monkeypatch: pytest.MonkeyPatch, data: bytes
) -> None:
    # The second lock: with the byte scan disabled, libxml2 sees the DOCTYPE
    # but resolves nothing, and the DTD node it leaves is still refused.
    monkeypatch.setattr(xmlparse, "_DOCTYPE", b"\x00never-present\x00")
    with pytest.raises(BodyError) as info:
        parse_xml(data)
    assert PASSWD_MARKER not in str(info.value).encode()
    assert "lollollol" not in str(info.value)


def test_xinclude_is_not_processed() -> None:
    root = parse_xml(XINCLUDE)
    assert PASSWD_MARKER not in etree.tostring(root)
    assert root[0].tag == "{http://www.w3.org/2001/XInclude}include"


def test_too_large_is_refused_before_parsing() -> None:
    data = b"<a>" + b"x" * MAX_BODY_BYTES + b"</a>"
    assert reason(data) == "document too large"


def test_size_limit_is_a_parameter() -> None:
    with pytest.raises(BodyError, match="too large"):
        parse_xml(b"<a>0123456789</a>", max_bytes=10)


def test_depth_at_the_limit_is_fine_and_one_more_is_refused() -> None:
    assert parse_xml(nested(MAX_DEPTH)).tag == "a"
    assert reason(nested(MAX_DEPTH + 1)) == "document nested too deeply"
    with pytest.raises(BodyError, match="nested too deeply"):
        parse_xml(nested(4), max_depth=3)


def test_pathological_nesting_is_refused() -> None:
    # Past libxml2's own limit (256 without huge_tree): refused by the parser.
    assert reason(nested(5000)).startswith("not well-formed XML")


def test_element_count_is_bounded() -> None:
    assert parse_xml(b"<a>" + b"<b/>" * (MAX_ELEMENTS - 1) + b"</a>").tag == "a"
    assert reason(b"<a>" + b"<b/>" * MAX_ELEMENTS + b"</a>") == "document has too many elements"
    with pytest.raises(BodyError, match="too many elements"):
        parse_xml(b"<a><b/><b/></a>", max_elements=2)


@pytest.mark.parametrize(
    "data",
    [
        "<a>x</a>".encode("utf-16"),
        '<?xml version="1.0" encoding="UTF-16"?><a>x</a>'.encode("utf-16-le"),
        '<?xml version="1.0" encoding="ISO-8859-1"?><a>caf\xe9</a>'.encode("latin-1"),
        b"<a>\xff\xfe</a>",
    ],
    ids=["utf16-bom", "utf16-declared", "latin1", "invalid-bytes"],
)
def test_non_utf8_is_refused(data: bytes) -> None:
    assert reason(data).startswith("not well-formed XML")


@pytest.mark.parametrize(
    "data",
    [
        b"<a><b></a>",
        b"<a/>trailing",
        b"<a>&undefined;</a>",
        b"<p:a/>",
        b"text",
        b"<a b='1' b='2'/>",
    ],
)
def test_not_well_formed_is_refused(data: bytes) -> None:
    assert reason(data).startswith("not well-formed XML: line 1, column ")


def test_reason_names_line_and_column_and_stays_one_short_line() -> None:
    message = reason(b"<a>\n<b>\n</a>" + b"<c/>" * 100)
    assert message.startswith("not well-formed XML: line 3, column ")
    assert "\n" not in message
    assert "\r" not in message
    assert len(message) <= MAX_REASON_CHARS


def test_body_error_flattens_its_reason() -> None:
    error = BodyError("a\r\nb\x00c" + "x" * 500)
    assert "\n" not in str(error)
    assert len(str(error)) == MAX_REASON_CHARS
    assert isinstance(error, ValueError)


@pytest.mark.parametrize("data", [b"", b"   \r\n", b'<?xml version="1.0"?>'])
def test_empty_is_refused(data: bytes) -> None:
    reason(data)


def test_serialize_writes_a_double_quoted_utf8_declaration() -> None:
    out = serialize_xml(parse_xml("<a>☎</a>".encode()))
    assert out.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert parse_xml(out).text == "☎"


def test_xml_text_removes_what_xml_cannot_carry() -> None:
    assert xml_text("Bob\x00 \x1b[31m\ufffe Smith\t") == "Bob [31m Smith\t"


def test_parser_is_safe_across_threads() -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for _ in range(200):
                results.append(str(parse_xml(f"<a{index}/>".encode()).tag))
                with pytest.raises(BodyError):
                    parse_xml(b"<broken>")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(set(results)) == [f"a{i}" for i in range(4)]


def check_parses_or_refuses(data: bytes) -> None:
    try:
        root = parse_xml(data)
    except BodyError as e:
        message = str(e)
    else:
        assert isinstance(root, etree._Element)
        return
    assert "\n" not in message
    assert len(message) <= MAX_REASON_CHARS


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_any_bytes_parse_or_raise_body_error(data: bytes) -> None:
    check_parses_or_refuses(data)


XML_PIECES = [
    *(
        "<a>",
        "</a>",
        "<b x='1'>",
        "</b>",
        "<c/>",
        "&amp;",
        "&x;",
        "<!DOCTYPE a>",
        "<![CDATA[",
        "]]>",
    ),
    *("<!--", "-->", "<?pi?>", "xmlns:p='urn:p'", "<p:d/>", "\u00e9", "\x00", "\ufeff", " "),
]
XMLISH = st.lists(st.sampled_from(XML_PIECES), max_size=40).map(
    lambda parts: "".join(parts).encode("utf-8")
)


@settings(max_examples=300)
@given(XMLISH)
def test_xml_like_input_parses_or_raises_body_error(data: bytes) -> None:
    check_parses_or_refuses(data)
