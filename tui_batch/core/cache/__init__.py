"""The answer cache: answers reused across jobs, keyed by everything that decides them."""
