"""Just enough of the RocketMQ remoting protocol to ask a NameServer which brokers it knows.

The harness uses it to wait until a broker (RingMQ's or Apache's) has registered, without
depending on either project's tools. Frames are the 4.x layout: total length, header length
with the serialize type in the high byte, a JSON header, then the body (docs/protocol.md §1.2).
"""

import json
import re
import socket
import struct

GET_BROKER_CLUSTER_INFO = 106
SUCCESS = 0


class RemotingError(Exception):
    """The server could not be reached or answered something other than SUCCESS."""


def _read_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise RemotingError("connection closed mid-frame")
        data += chunk
    return data


def request(addr, code, timeout_s=3.0):
    """Sends one request with a JSON header and returns (response code, remark, body bytes)."""
    host, port = addr.rsplit(":", 1)
    header = json.dumps(
        {"code": code, "language": "JAVA", "version": 399, "opaque": 1, "flag": 0, "extFields": {}}
    ).encode()
    frame = struct.pack(">II", 4 + len(header), len(header)) + header
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
            sock.sendall(frame)
            (total,) = struct.unpack(">I", _read_exact(sock, 4))
            rest = _read_exact(sock, total)
    except OSError as error:
        raise RemotingError(f"{addr}: {error}") from error
    (header_word,) = struct.unpack(">I", rest[:4])
    header_len = header_word & 0xFFFFFF
    serialize_type = header_word >> 24
    if serialize_type != 0:
        raise RemotingError(f"{addr}: answered with serialize type {serialize_type}, asked for JSON")
    answer = json.loads(rest[4 : 4 + header_len])
    return answer.get("code"), answer.get("remark"), rest[4 + header_len :]


def registered_brokers(namesrv_addr):
    """Broker name -> {brokerId: address} as the NameServer's cluster info lists them."""
    code, remark, body = request(namesrv_addr, GET_BROKER_CLUSTER_INFO)
    if code != SUCCESS:
        raise RemotingError(f"GET_BROKER_CLUSTER_INFO answered {code}: {remark}")
    # fastjson writes integer map keys unquoted ({0:"addr"}); quote them so json can read it.
    info = json.loads(_quote_integer_keys(body.decode()))
    return {
        name: {int(k): v for k, v in data.get("brokerAddrs", {}).items()}
        for name, data in info.get("brokerAddrTable", {}).items()
    }


# A bare integer object key right after `{` or `,`: fastjson writes map keys of integer type so.
_BARE_INTEGER_KEY = re.compile(r"\s*(-?\d+)\s*:")


def _quote_integer_keys(text):
    """`text` with every bare integer object key quoted; strings are left alone."""
    out = []
    in_string = escaped = False
    i = 0
    while i < len(text):
        ch = text[i]
        out.append(ch)
        i += 1
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{,":
            key = _BARE_INTEGER_KEY.match(text, i)
            if key:
                out.append(f'"{key.group(1)}":')
                i = key.end()
    return "".join(out)
