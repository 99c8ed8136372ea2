import pytest

from brokerage.domain.orders import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATUSES,
    IllegalTransition,
    OrderStatus,
    transition,
)


def test_every_status_has_a_row() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(OrderStatus)


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_terminal_statuses_never_move(terminal: OrderStatus) -> None:
    assert terminal.is_terminal
    for target in OrderStatus:
        with pytest.raises(IllegalTransition):
            transition(terminal, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (OrderStatus.SUBMITTED, OrderStatus.PLACED),
        (OrderStatus.PARTIALLY_FILLED, OrderStatus.SUBMITTED),
        (OrderStatus.PARTIALLY_FILLED, OrderStatus.REJECTED),
    ],
)
def test_the_status_never_moves_back(current: OrderStatus, target: OrderStatus) -> None:
    with pytest.raises(IllegalTransition):
        transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (OrderStatus.PLACED, OrderStatus.SUBMITTED),
        (OrderStatus.PLACED, OrderStatus.FILLED),  # a fill can beat the worker's SUBMITTED
        (OrderStatus.PLACED, OrderStatus.CANCELED),
        (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED),
        (OrderStatus.PARTIALLY_FILLED, OrderStatus.PARTIALLY_FILLED),
        (OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED),
    ],
)
def test_forward_moves_and_skips_are_allowed(current: OrderStatus, target: OrderStatus) -> None:
    assert transition(current, target) is target
