"""Real-world-shaped SIP messages, as phones and proxies put them on the wire."""

from __future__ import annotations

# A Linphone SUBSCRIBE for presence, the shape Linphone 4.x/5.x sends.
LINPHONE_SUBSCRIBE = (
    b"SUBSCRIBE sip:alice@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK.7xq1Gd3Rb;rport\r\n"
    b"From: <sip:bob@example.com>;tag=Q3Zr9WkYZ\r\n"
    b"To: sip:alice@example.com\r\n"
    b"CSeq: 20 SUBSCRIBE\r\n"
    b"Call-ID: tNnc4yGbNq\r\n"
    b"Max-Forwards: 70\r\n"
    b"Supported: replaces, outbound, gruu\r\n"
    b"Event: presence\r\n"
    b"Expires: 600\r\n"
    b'Contact: <sip:bob@192.168.1.20;transport=udp>;+sip.instance="<urn:uuid:0f3d2a4e-4b7a-4cde-9c2b-64b0c3a1e2f1>"\r\n'
    b"Accept: application/pidf+xml, application/rlmi+xml, multipart/related\r\n"
    b"User-Agent: Linphone Desktop/4.4.10 (Ubuntu 22.04) LinphoneCore/5.1.64\r\n"
    b"\r\n"
)

# A Zoiper SUBSCRIBE: compact-ish mix, display names, rport, Allow list.
ZOIPER_SUBSCRIBE = (
    b"SUBSCRIBE sip:carol@example.org;transport=TCP SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 10.0.0.7:41952;branch=z9hG4bK-524287-1---6c8a1b2f1e3d4a5c;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Contact: <sip:dave@10.0.0.7:41952;transport=TCP>\r\n"
    b'To: "Carol" <sip:carol@example.org;transport=TCP>\r\n'
    b'From: "Dave, Jr." <sip:dave@example.org;transport=TCP>;tag=8f3a1c2d\r\n'
    b"Call-ID: ZTg4YjE3ODk5ZWFjNjUyMjNjZDM2OTVlNDM1ZGY4NjQ\r\n"
    b"CSeq: 1 SUBSCRIBE\r\n"
    b"Expires: 3600\r\n"
    b"Accept: application/pidf+xml\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n"
    b"User-Agent: Zoiper rv2.10.19.6\r\n"
    b"Event: presence\r\n"
    b"Allow-Events: presence, kpml, talk\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

PIDF_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com">\n'
    b'  <tuple id="t8b6c"><status><basic>open</basic></status>'
    b"<contact>sip:alice@192.168.1.30</contact></tuple>\n"
    b"</presence>\n"
)

PUBLISH = (
    b"PUBLISH sip:alice@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.168.1.30:5062;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:alice@example.com>\r\n"
    b"From: <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 PUBLISH\r\n"
    b"Event: presence\r\n"
    b"Expires: 3600\r\n"
    b"Content-Type: application/pidf+xml\r\n"
    b"Content-Length: " + str(len(PIDF_BODY)).encode() + b"\r\n"
    b"\r\n" + PIDF_BODY
)

# A NOTIFY as a presence server sends it, through a proxy (two Vias).
NOTIFY = (
    b"NOTIFY sip:bob@192.168.1.20;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK2d4790.1\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKnashds8;received=203.0.113.5\r\n"
    b"Max-Forwards: 69\r\n"
    b"To: <sip:bob@example.com>;tag=Q3Zr9WkYZ\r\n"
    b"From: <sip:alice@example.com>;tag=ffd2\r\n"
    b"Call-ID: tNnc4yGbNq\r\n"
    b"CSeq: 2 NOTIFY\r\n"
    b"Event: presence\r\n"
    b"Subscription-State: active;expires=599\r\n"
    b"Contact: <sip:presence@203.0.113.5:5060>\r\n"
    b"Content-Type: application/pidf+xml\r\n"
    b"Content-Length: " + str(len(PIDF_BODY)).encode() + b"\r\n"
    b"\r\n" + PIDF_BODY
)

OK_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKnashds8;received=203.0.113.5\r\n"
    b"To: <sip:bob@example.com>;tag=Q3Zr9WkYZ\r\n"
    b"From: <sip:alice@example.com>;tag=ffd2\r\n"
    b"Call-ID: tNnc4yGbNq\r\n"
    b"CSeq: 2 NOTIFY\r\n"
    b"User-Agent: Linphone Desktop/4.4.10\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

ACCEPTED_202 = (
    b"SIP/2.0 202 Accepted\r\n"
    b"Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK.7xq1Gd3Rb;rport=5060;received=198.51.100.7\r\n"
    b"From: <sip:bob@example.com>;tag=Q3Zr9WkYZ\r\n"
    b"To: sip:alice@example.com;tag=ffd2\r\n"
    b"Call-ID: tNnc4yGbNq\r\n"
    b"CSeq: 20 SUBSCRIBE\r\n"
    b"Expires: 600\r\n"
    b"Contact: <sip:presence@203.0.113.5:5060>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

NOT_EXIST_481 = (
    b"SIP/2.0 481 Call/Transaction Does Not Exist\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKnashds9\r\n"
    b"To: <sip:bob@example.com>;tag=Q3Zr9WkYZ\r\n"
    b"From: <sip:alice@example.com>;tag=ffd2\r\n"
    b"Call-ID: tNnc4yGbNq\r\n"
    b"CSeq: 3 NOTIFY\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

# The same SUBSCRIBE with compact names, odd case, folding and bare LFs.
COMPACT_SUBSCRIBE = (
    b"SUBSCRIBE sip:alice@example.com SIP/2.0\n"
    b"v: SIP/2.0/UDP 192.168.1.20:5060\n"
    b"  ;branch=z9hG4bKcompact1\n"
    b"f: <sip:bob@example.com>;tag=abc\n"
    b"t: <sip:alice@example.com>\n"
    b"i: compact-call-id\n"
    b"cseq: 7 SUBSCRIBE\n"
    b"o: presence;id=42\n"
    b"m: <sip:bob@192.168.1.20>\n"
    b"u: presence, presence.winfo\n"
    b"l: 0\n"
    b"\n"
)

ALL = {
    "linphone_subscribe": LINPHONE_SUBSCRIBE,
    "zoiper_subscribe": ZOIPER_SUBSCRIBE,
    "publish": PUBLISH,
    "notify": NOTIFY,
    "ok_200": OK_200,
    "accepted_202": ACCEPTED_202,
    "not_exist_481": NOT_EXIST_481,
    "compact_subscribe": COMPACT_SUBSCRIBE,
}
