"""Notifications: the transactional outbox, its dispatcher, channels, pacing and failure classes.

Handlers and services never send a business notification directly: they `enqueue` it in their
own unit of work, and the dispatcher delivers it (docs/architecture.md, principles 2-6). The path,
file by file:

1. enqueue: `outbox.enqueue` stores the row in the caller's transaction; its commit wakes the
   dispatcher (`transitions.wake`: this process directly, others by PostgreSQL NOTIFY).
2. claim: `dispatcher` (the loop: leader lease, wake-ups, lease renewal, stop) has `batches`
   lease a batch of due rows to it, as `batches.Job`s.
3. deliver: `delivery` picks each job's channel (`channels/`, Telegram paced by
   `pacing_telegram`, the others by `pacing`), sends, classifies a failure (`classify`,
   `failures`) and decides what next by `transitions`' rules, into an in-memory `Outcome`.
4. record: `recording` writes the outcomes through `batches`, with their side effects: opt-outs,
   circuits, and a dead letter's alert to the admins (`dead_letters`).
5. receipts: `receipts` applies a provider's later delivered/read/failed report to the row; a
   failure takes the next channel or dead-letters it by the same `transitions` rules. A report
   that arrives before its send is recorded is stored (`early_receipts`) and applied by
   `recording` right after the record, or by the scheduler's sweep.

`transitions` holds every move along the chain (next channel, wait, dead letter, restart) and
the wake-up; leases are taken and released in `batches` and `outbox`, cancel and archive are
`outbox`'s;
`dead_letters` tells the admins about a dead letter and sends dead letters again at their
request; `outbox` also holds the admins' other actions and the statistics.
"""
