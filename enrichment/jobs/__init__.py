"""The jobs service: the only writer of jobs, their outbox, unit reservations (through the units
ledger), dead letters and batches. Adapters (views, the CLI, tasks) call `service`; nothing
outside this package writes these tables, and nothing in it imports what reacts to a job
(webhooks, events): finishing records a `job_events` row that the layers above read.

    states     statuses, outcomes, what is published      slots      the workspace lock, fill
    intake     admission rules → a new job                 lifecycle  every state transition
    outbox     publish after commit, relay, lost messages  batches    batches and their items
    events     what happened, for the layers above          units      the units ledger
    read       jobs as the API shows them                   service    the entry points


    waiting ──(a slot frees)──> queued ──(claim)──> processing ──> succeeded | failed | dead
       ▲                          ▲                     │
       └── admitted, no free slot └── lease expired / handed back (keeps its slot)

Slots. A workspace runs at most `limit` jobs at once (its plan's `workspace_concurrency`, or
WORKSPACE_CONCURRENCY). Its `queued` and `processing` jobs hold its slots; only those have a
message in a tier queue, so the weighted tier order is spent on work that can run. Every
transaction that adds or removes a slot holder first locks the workspace row (FOR NO KEY
UPDATE: foreign-key checks are not blocked), then counts holders in a later statement, which
therefore sees every committed change: the count is exact across API processes and worker
machines, and lives in PostgreSQL, so a Redis restart cannot lose or double a slot. When a
holder ends, `fill` hands its slot to the workspace's oldest waiting job in the same
transaction (FIFO per workspace); that job's outbox row is written there too and published
after commit — one message per freed slot.

Lock order, everywhere: the workspace row, then job rows, then the usage counter.

Publishing. A queued job's message is sent after its transaction commits and its outbox row is
then deleted; `published_at` records when it was last sent. The relay publishes outbox rows a
crash left behind, and re-sends a queued job only when *its last publish* is older than
LOST_MESSAGE_SECONDS (a broker that lost it) — never because the job itself is old.
"""

