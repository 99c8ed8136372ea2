"""ExecutionService: the worker clusters that take each customer's orders to the exchange, oldest first."""
