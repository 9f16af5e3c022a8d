"""What a schedule costs: request weight against the exchange's limits, and disk per day."""
