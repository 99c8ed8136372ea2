"""Requests are checked before any servicer sees them: undecodable bytes, control characters in any string and
impossible times are malformed input naming the field; ids are matched whole; page and resume tokens name only
positions a bigint holds."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brokerage.domain.errors import InvalidRequest
from brokerage.domain.identifiers import is_id, required_id
from brokerage.proto import callback_pb2, exchange_pb2, orders_pb2
from brokerage.rpc.requests import Malformed, checked, field_violations
from order_service import translate

parse_place = checked(orders_pb2.PlaceOrderRequest.FromString, 64 * 1024)
parse_batch = checked(exchange_pb2.SubmitOrderBatch.FromString, 1 << 20)


def test_a_well_formed_request_passes_as_its_message() -> None:
    request = orders_pb2.PlaceOrderRequest(customer_id="7", client_order_id="a-1", symbol="AAPL", quantity=1)

    assert parse_place is not None
    assert parse_place(request.SerializeToString()) == request


@pytest.mark.parametrize("data", [b"\xff", b"\x0a\x05ab", b"\x12\x02\xc3\x28", b"\x08" + b"\xff" * 10 + b"\x01"])
def test_bytes_that_are_no_message_are_malformed_not_unknown(data: bytes) -> None:
    assert parse_place is not None
    parsed = parse_place(data)

    assert isinstance(parsed, Malformed)
    assert "not a valid request message" in str(parsed.error)


@pytest.mark.parametrize("text", ["7\x00", "\x00", "7\n", "a\tb", "\x7f", "\x85"])
def test_a_control_character_in_any_string_names_its_field(text: str) -> None:
    request = orders_pb2.PlaceOrderRequest(customer_id="7", client_order_id="ok", symbol=text)

    assert [v.field for v in field_violations(request)] == ["symbol"]


def test_strings_of_nested_and_repeated_messages_are_checked_with_their_path() -> None:
    batch = exchange_pb2.SubmitOrderBatch(
        orders=[exchange_pb2.SubmitOrderRequest(order_id="fine"), exchange_pb2.SubmitOrderRequest(order_id="o\x001")]
    )
    assert parse_batch is not None
    parsed = parse_batch(batch.SerializeToString())

    assert isinstance(parsed, Malformed)
    assert [v.field for v in parsed.error.violations] == ["orders[1].order_id"]


@pytest.mark.parametrize(("seconds", "nanos"), [(2**63 - 1, 0), (-(2**63), 0), (253_402_300_800, 0), (0, -1)])
def test_a_timestamp_no_datetime_holds_is_malformed(seconds: int, nanos: int) -> None:
    report = callback_pb2.ExecutionReport(exec_id="e-1")
    report.transact_time.seconds, report.transact_time.nanos = seconds, nanos

    assert [v.field for v in field_violations(report)] == ["transact_time"]


def test_ordinary_text_and_times_pass() -> None:
    report = callback_pb2.ExecutionReport(exec_id="e-1", order_id="o-1", reason="Käufer: ok 🙂")
    report.transact_time.GetCurrentTime()

    assert field_violations(report) == []


@given(st.text(max_size=80))
def test_an_id_is_one_to_64_visible_ascii_characters_matched_whole(text: str) -> None:
    expected = 1 <= len(text) <= 64 and all("!" <= c <= "~" for c in text)

    assert is_id(text) == expected
    if not expected:
        with pytest.raises(InvalidRequest):
            required_id("order_id", text)


def test_a_trailing_newline_is_no_id() -> None:
    assert not is_id("7\n")


def _token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize("position", [str(2**63), str(2**64 + 5), "٣", "-1", "1e3", ""])
def test_a_page_token_past_a_bigint_or_not_a_number_is_malformed(position: str) -> None:
    with pytest.raises(InvalidRequest, match="page_token"):
        translate.decode_page_token(_token(f"v1:{position}"))
    with pytest.raises(InvalidRequest, match="resume_token"):
        translate.decode_resume_token(_token(f"events-v1:{position}"))


def test_the_largest_position_a_bigint_holds_is_a_token() -> None:
    assert translate.decode_page_token(translate.encode_page_token(2**63 - 1)) == 2**63 - 1
