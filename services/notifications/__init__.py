"""Notifications: the transactional outbox, its dispatcher, channels, pacing and failure classes.

Handlers and services never send a business notification directly: they `enqueue` it in their
own unit of work, and the dispatcher delivers it (ARCHITECTURE.md principles 2-6).
"""
