"""CallbackService: where the exchange reports executions, at least once each; every report is booked exactly once
and settles the customer's cash and shares in the same transaction."""
