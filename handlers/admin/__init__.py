"""Admin screens. Every handler here checks the admin role itself: a button can be forwarded,
and callback data can be forged."""
