"""The verbs users run: find, transfer, eval, demo (and the shared steps prepare and level)."""
