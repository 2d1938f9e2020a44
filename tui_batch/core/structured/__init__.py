"""Structured answers: a schema for every answer (`schema`), and each answer checked
against it (`check`)."""
