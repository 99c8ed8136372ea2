"""`python -m exchange_simulator`: serves the simulated venue until SIGTERM."""

from exchange_simulator.main import main

main()
