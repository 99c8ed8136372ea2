"""`make demo` picks its customers from those `make run` funds, passing over any whose cash earlier demos or a load
test spent: with customers 1 to 3 spent, it once failed every buy with "insufficient buying power"."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from brokerage.proto import orders_pb2
from devtools.demo import BUDGET, NoCustomers, pick_customers
from devtools.run import SEED_CUSTOMERS


class Accounts:
    """GetAccount over fixed balances; every customer not named has the seed's 100000.00."""

    def __init__(self, available: dict[str, Decimal]) -> None:
        self._available = available
        self.asked: list[str] = []

    async def GetAccount(self, request: orders_pb2.GetAccountRequest, timeout: float) -> orders_pb2.Account:
        self.asked.append(request.customer_id)
        cash = self._available.get(request.customer_id, Decimal("100000.00"))
        return orders_pb2.Account(customer_id=request.customer_id, available=str(cash))


async def test_the_first_customers_with_the_budget_left_are_picked_in_order() -> None:
    spent = {"1": Decimal("708.28"), "2": BUDGET - Decimal("0.01"), "4": Decimal("0")}
    assert await pick_customers(_stub(Accounts(spent)), 3) == ["3", "5", "6"]


async def test_a_customer_with_exactly_the_budget_takes_part() -> None:
    assert await pick_customers(_stub(Accounts({"1": BUDGET})), 1) == ["1"]


async def test_customers_are_looked_up_a_batch_at_a_time_and_no_further_than_needed() -> None:
    accounts = Accounts({})
    await pick_customers(_stub(accounts), 3)
    assert accounts.asked == [str(c) for c in range(1, 51)]


async def test_too_few_customers_with_the_budget_is_a_clear_error() -> None:
    all_spent_but_999 = {str(c): Decimal("0") for c in range(1, SEED_CUSTOMERS + 1)} | {"999": BUDGET}
    with pytest.raises(NoCustomers, match="only 1 of customers 1 to 1000"):
        await pick_customers(_stub(Accounts(all_spent_but_999)), 2)


def _stub(accounts: Accounts) -> Any:
    """Accounts in the place of an OrderServiceStub, which is all pick_customers asks of one."""
    return accounts
