"""segment-analytics-python against the server, driven by tests/sdk.rs.

Usage: python3 send_events.py <server-url> <write-key> [--gzip | --no-gzip]
       (or SDK_SERVER_URL / SDK_WRITE_KEY in the environment)

Environment:
  SDK_RUN             a tag that makes the ids of this run unique (default: a timestamp)
  SDK_BURST           tracks in the burst (default 300)
  SDK_BURST_DELAY_MS  pause between two tracks of the burst (default 0)
  SDK_TIMEOUT_MS      how long the flush may take (default 45000)

stdout: one JSON object a line: {"call": ..., "messageId": ..., ...} per event
enqueued, then {"summary": true, "errors": N, ...}. Exit code 0 only if every
event was enqueued, the flush finished in time and on_error never fired.
"""

import json
import os
import re
import sys
import threading
import time
from urllib.parse import urlsplit

LOOPBACK = re.compile(r"^(localhost|::1|127\.\d+\.\d+\.\d+)$")


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def env_int(name, default):
    value = os.environ.get(name, "")
    return int(value) if value else default


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    flags = [a for a in sys.argv[1:] if a.startswith("--")]
    url = args[0] if len(args) > 0 else os.environ.get("SDK_SERVER_URL")
    write_key = args[1] if len(args) > 1 else os.environ.get("SDK_WRITE_KEY")
    if not url or not write_key:
        print("usage: send_events.py <server-url> <write-key> [--gzip|--no-gzip]", file=sys.stderr)
        return 2
    host = urlsplit(url).hostname or ""
    if not LOOPBACK.match(host):
        print(f"refusing to send to {host!r}: only loopback addresses are allowed", file=sys.stderr)
        return 2
    gzip = "--no-gzip" not in flags
    run = os.environ.get("SDK_RUN") or str(int(time.time() * 1000))
    burst = env_int("SDK_BURST", 300)
    burst_delay = env_int("SDK_BURST_DELAY_MS", 0) / 1000.0
    timeout = env_int("SDK_TIMEOUT_MS", 45000) / 1000.0

    # No proxy between the client and the loopback server, whatever the environment says.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        os.environ.pop(var, None)
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"

    from segment.analytics import Client
    from segment.analytics.version import VERSION

    errors = []
    lock = threading.Lock()

    def on_error(error, batch):
        with lock:
            errors.append(str(error))
        print(f"analytics-python on_error: {error} ({len(batch)} events)", file=sys.stderr)

    client = Client(
        write_key,
        host=url.rstrip("/"),
        gzip=gzip,
        on_error=on_error,
        max_retries=10,
        timeout=10,
        upload_interval=0.2,
        upload_size=50,
    )

    sdk = "python-gzip" if gzip else "python"
    prefix = f"{sdk}-{run}"
    user_id = f"{prefix}-user"
    anonymous_id = f"{prefix}-anon"
    traits = {"email": f"{user_id}@example.com", "name": "Ada Lovelace", "plan": "pro"}
    group_id = f"{prefix}-org"
    group_traits = {"name": "Acme Inc", "employees": 42, "industry": "Software"}
    order = {
        "order_id": f"{prefix}-order-1",
        "total": 30,
        "revenue": 25,
        "currency": "USD",
        "products": [
            {"product_id": "sku-1", "sku": "SKU-1", "name": "Monopoly", "price": 10, "quantity": 1},
            {"product_id": "sku-2", "sku": "SKU-2", "name": "Uno", "price": 15, "quantity": 1},
        ],
    }
    enqueue_failures = 0
    calls = 0

    def record(call, result, **extra):
        nonlocal enqueue_failures, calls
        calls += 1
        ok, msg = result
        if not ok:
            enqueue_failures += 1
            print(f"analytics-python: {call} not enqueued (queue full?)", file=sys.stderr)
        emit({"sdk": sdk, "call": call, "messageId": msg["messageId"], "type": msg["type"], "ok": ok, **extra})

    started = time.monotonic()
    record(
        "identify",
        client.identify(user_id, traits, anonymous_id=anonymous_id),
        userId=user_id,
        anonymousId=anonymous_id,
        traits=traits,
    )
    seq = 1
    record(
        "track",
        client.track(
            user_id, "Signed Up", {"plan": "pro", "source": "sdk-test", "sdk_seq": seq}, anonymous_id=anonymous_id
        ),
        userId=user_id,
        event="Signed Up",
        seq=seq,
    )
    seq += 1
    record(
        "order",
        client.track(user_id, "Order Completed", {**order, "sdk_seq": seq}),
        userId=user_id,
        event="Order Completed",
        seq=seq,
        orderId=order["order_id"],
        products=len(order["products"]),
    )
    seq += 1
    record(
        "page",
        client.page(user_id, category="Docs", name="Home", properties={"path": "/docs", "title": "Docs", "sdk_seq": seq}),
        userId=user_id,
        name="Home",
        seq=seq,
    )
    seq += 1
    record(
        "screen",
        client.screen(user_id, name="Dashboard", properties={"variant": "b", "sdk_seq": seq}),
        userId=user_id,
        name="Dashboard",
        seq=seq,
    )
    record("group", client.group(user_id, group_id, group_traits), userId=user_id, groupId=group_id, traits=group_traits)
    record("alias", client.alias(f"{prefix}-old-id", user_id), userId=user_id, previousId=f"{prefix}-old-id")
    for i in range(burst):
        seq += 1
        record("burst", client.track(user_id, "Burst Event", {"n": i, "sdk_seq": seq}), userId=user_id, n=i, seq=seq)
        if burst_delay > 0:
            time.sleep(burst_delay)

    # flush() blocks until the queue is empty; bound it.
    flusher = threading.Thread(target=client.flush, daemon=True)
    flusher.start()
    flusher.join(timeout)
    flushed = not flusher.is_alive()
    if flushed:
        client.join()
    ok = flushed and not errors and enqueue_failures == 0
    emit(
        {
            "summary": True,
            "sdk": sdk,
            "library": f"analytics-python/{VERSION}",
            "gzip": gzip,
            "ok": ok,
            "flushed": flushed,
            "errors": len(errors),
            "enqueue_failures": enqueue_failures,
            "calls": calls,
            "ms": int((time.monotonic() - started) * 1000),
        }
    )
    sys.stdout.flush()
    # A consumer thread stuck in a retry must not keep the process alive.
    os._exit(0 if ok else 1)


if __name__ == "__main__":
    sys.exit(main())
