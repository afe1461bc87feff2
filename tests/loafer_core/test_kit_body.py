"""``loafer_core.kit.encode_body``: what every publisher sends of a body."""

from __future__ import annotations

import pytest

from loafer_core.errors import ConfigurationError
from loafer_core.kit import encode_body


def test_bytes_pass_through_text_is_utf8_and_the_rest_is_json() -> None:
    assert encode_body(b"\xff", "P") == b"\xff"
    assert encode_body(bytearray(b"ab"), "P") == b"ab"
    assert encode_body(memoryview(b"cd"), "P") == b"cd"
    assert encode_body("é", "P") == "é".encode()
    assert encode_body({"a": [1, None]}, "P") == b'{"a": [1, null]}'


def test_a_body_json_cannot_encode_names_the_publisher_and_the_type() -> None:
    with pytest.raises(ConfigurationError, match=r"^NATSPublisher: cannot encode a set body"):
        encode_body({1}, "NATSPublisher")
