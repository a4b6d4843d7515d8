#!/usr/bin/env python3
"""A fleet worker in Python: it joins a running fleet with nothing but a NATS client.

It runs one task, `text.wordcount` (how many words and characters a text has), following the
fleet's wire contract (README, "Workers in any language"):

1. It publishes the task's catalog entry (name, description, input schema, output, examples
   and `patterns`, regular expressions in the common RE2 subset with named groups) under the
   task's name in the `<prefix>-catalog` bucket: the dispatcher can route to it at once, by
   its patterns or through the LLM, with no dispatcher change.
2. It pulls `<prefix>.tasks.text.wordcount` through the durable consumer
   `worker-text_wordcount` (explicit acks) of the `<PREFIX>_TASKS` stream.
3. For each task message it sends in-progress acks while it works, checks the input, and
   publishes the one result to `<prefix>.results.<request_id>` with
   `Nats-Expected-Last-Subject-Sequence: 0` (the server keeps only the first result), and
   acknowledges the message only after the result is stored. A bad input is a permanent
   failure: a `failed` result, then TERM. An error storing the result: NAK with a delay.

It writes no status record: the fleet settles the status from the stored result.

    pip install -r requirements.txt
    NATS_URL=nats://127.0.0.1:4222 python3 worker.py

Settings: NATS_URL (comma-separated servers), FLEET_PREFIX (`fleet`), FLEET_WORKER_ID.
"""

import asyncio
import json
import os
import signal
import socket
import sys
from datetime import datetime, timezone

import nats
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import APIError, BadRequestError, NotFoundError

TASK = "text.wordcount"
PREFIX = os.environ.get("FLEET_PREFIX", "fleet")
STREAM_PREFIX = PREFIX.upper().replace("-", "_")
WORKER_ID = os.environ.get("FLEET_WORKER_ID", f"py-{socket.gethostname()}-{os.getpid()}")
ACK_WAIT_S = 30.0

# What the dispatcher and the LLM read. Patterns use only the common RE2 subset: `(?i)` at
# the start, `(?P<name>...)` groups, no look-around or back-references.
QUOTED = r"""["'`“‘](?P<text>[^"'`”’]+)["'`”’]"""
SPEC = {
    "name": TASK,
    "description": (
        "Count the words and characters of a text the user gives. Pick it when the request "
        "asks how many words a given text has; `text` is only that text, copied exactly."
    ),
    "input_schema": {
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 1, "description": "The text to count the words of."}},
        "required": ["text"],
        "additionalProperties": False,
    },
    "output": '{ "words": number of words, "characters": number of characters }',
    "examples": [
        "Count the words in 'the quick brown fox'",
        'how many words are in "to be or not to be"',
    ],
    "patterns": [
        {"regex": r"(?i)^(?:please\s+)?(?:count|tally)\s+(?:the\s+)?words\s+(?:in|of)\s*:?\s*" + QUOTED + r"[\s.!?]*$"},
        {"regex": r"(?i)^(?:please\s+)?(?:count|tally)\s+(?:the\s+)?words\s+(?:in|of)\s*:\s*(?P<text>.+?)[\s.!?]*$"},
        {"regex": r"(?i)^how\s+many\s+words\s+(?:are\s+)?(?:in|does)\s+" + QUOTED},
        {"regex": r"(?i)^word\s+count\s*(?:of|for)?\s*:\s*(?P<text>.+?)\s*$"},
        {"regex": r"(?i)\bword\s+count\b.*?" + QUOTED, "hint": True},
    ],
}


def now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def run_task(task_input: dict) -> dict:
    """The task itself."""
    text = task_input["text"]
    return {"words": len(text.split()), "characters": len(text)}


def check_input(task_input) -> str | None:
    """Why the input does not fit the schema, or None."""
    if not isinstance(task_input, dict):
        return "the input is not an object"
    extra = set(task_input) - {"text"}
    if extra:
        return f"unknown fields: {', '.join(sorted(extra))}"
    text = task_input.get("text")
    if not isinstance(text, str) or not text:
        return "`text` must be a non-empty string"
    return None


async def publish_catalog(js) -> None:
    """Puts the catalog entry, waiting for the bucket while the fleet sets up."""
    while True:
        try:
            kv = await js.key_value(f"{PREFIX}-catalog")
            await kv.put(TASK, json.dumps(SPEC).encode())
            return
        except (NotFoundError, BadRequestError, APIError) as e:
            print(f"worker.py: waiting for the catalog bucket ({e})", file=sys.stderr, flush=True)
            await asyncio.sleep(1)


async def subscribe(js):
    """Binds (creating when missing) the task's durable pull consumer."""
    durable = "worker-" + TASK.replace(".", "_")
    config = ConsumerConfig(
        durable_name=durable,
        description=f"shared by every worker running {TASK}",
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT_S,
        max_deliver=-1,
        filter_subject=f"{PREFIX}.tasks.{TASK}",
    )
    while True:
        try:
            return await js.pull_subscribe(
                f"{PREFIX}.tasks.{TASK}", durable=durable, stream=f"{STREAM_PREFIX}_TASKS", config=config
            )
        except (NotFoundError, BadRequestError, APIError) as e:
            print(f"worker.py: waiting for the tasks stream ({e})", file=sys.stderr, flush=True)
            await asyncio.sleep(1)


async def store_result(js, result: dict) -> None:
    """Publishes the one result; a result already stored stands (not an error)."""
    subject = f"{PREFIX}.results.{result['request_id']}"
    try:
        await js.publish(
            subject,
            json.dumps(result).encode(),
            headers={"Nats-Expected-Last-Subject-Sequence": "0"},
        )
    except APIError as e:
        if getattr(e, "err_code", None) == 10071:  # wrong last sequence: stored already
            return
        raise


async def handle(js, msg) -> None:
    try:
        task = json.loads(msg.data)
        request_id = task["request_id"]
    except (ValueError, KeyError, TypeError) as e:
        print(f"worker.py: unreadable task message ({e}); terminated", file=sys.stderr, flush=True)
        await msg.term()
        return
    await msg.in_progress()
    attempts = msg.metadata.num_delivered if msg.metadata else 1
    result = {
        "request_id": request_id,
        "task": task.get("task", TASK),
        "input": task.get("input"),
        "attempts": attempts,
        "classified_by": task.get("classified_by"),
        "worker": WORKER_ID,
        "finished_at": None,
    }
    for key in ("routing", "trace_id", "metadata"):
        if task.get(key) is not None:
            result[key] = task[key]
    problem = check_input(task.get("input"))
    if problem:
        result["status"] = "failed"
        result["error"] = {"kind": "invalid_input", "message": f"the input of `{TASK}` does not fit its schema: {problem}"}
    else:
        result["status"] = "succeeded"
        result["output"] = run_task(task["input"])
    result["finished_at"] = now()
    try:
        await store_result(js, result)
    except Exception as e:  # NATS trouble: try again later, the work is not lost
        print(f"worker.py: result not stored ({e}); will retry", file=sys.stderr, flush=True)
        await msg.nak(delay=1)
        return
    if problem:
        await msg.term()
    else:
        await msg.ack()
    print(f"worker.py: {request_id} {result['status']}", file=sys.stderr, flush=True)


async def main() -> None:
    servers = [s.strip() for s in os.environ.get("NATS_URL", "nats://127.0.0.1:4222").split(",") if s.strip()]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    nc = await nats.connect(servers=servers, name=f"fleet-python-worker {WORKER_ID}", max_reconnect_attempts=-1)
    js = nc.jetstream()
    await publish_catalog(js)
    sub = await subscribe(js)
    print(f"worker.py: ready, running {TASK}", file=sys.stderr, flush=True)
    while not stop.is_set():
        try:
            msgs = await sub.fetch(batch=16, timeout=1)
        except (asyncio.TimeoutError, nats.errors.TimeoutError):
            continue
        # Handlers are not raced against the stop signal: in-flight work finishes and is acked.
        await asyncio.gather(*(handle(js, m) for m in msgs))
    await nc.drain()
    print("worker.py: stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
