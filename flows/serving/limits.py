"""How much work `flowtune serve` takes on: per item, per request, per forward pass, in the queue and in time.

A module of its own, without FastAPI, so that the command line can show the defaults without loading
the service.
"""

from __future__ import annotations

from dataclasses import dataclass

# Request limits: beyond them the answer is a 4xx naming the field, before any model work.
MAX_BODY_BYTES = 1_048_576
MAX_ITEMS = 256  # texts or sentences per request
MAX_TEXT_CHARS = 10_000
MAX_TOKENS = 512  # tokens per pre-split sentence
MAX_TOKEN_CHARS = 200
MAX_WORDS = MAX_TOKENS  # words per text: a text costs what a sentence of as many tokens does
MAX_READING_BYTES = 4 * MAX_BODY_BYTES  # request bodies being read or parsed at once; 429 beyond
BODY_READ_S = 10  # a body not received by then: 408 (a slow sender holds its share of the budget no longer)
MAX_CONNECTIONS = 512  # open connections and requests in progress; uvicorn answers 503 beyond them


@dataclass(frozen=True)
class Limits:
    """How much work the service takes on (flowtune serve's options; docs/SECURITY.md)."""

    max_batch_size: int = 32  # items per forward pass
    max_wait_ms: float = 5.0  # how long a pass waits to fill
    max_batch_words: int = 2048  # words per forward pass: bounds how long one pass (and so any wait) lasts
    max_queue_words: int = 2 * MAX_ITEMS * MAX_WORDS  # queued beyond this: 429 (two maximal requests fit)
    timeout_s: float = 60.0  # a request not answered by then: 503
    max_unready_s: float = 600.0  # no model loaded for this long: /healthz 503 (restart me)
    token: str | None = None  # bearer token; None: no authentication (loopback only)
