"""Rendering findings for people (text) and programs (json)."""
