"""A works package with user strategies, for the tests of strategies from user code: one
that plans (its own way, so a test can tell its plans apart), and one for each way a
strategy can fail the leader (raise, return an invalid plan, never return)."""
