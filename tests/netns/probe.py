"""TCP probes run in a lab namespace: a connect that prints its outcome, a server naming callers."""

from __future__ import annotations

import argparse
import errno
import json
import socket
import sys
import time

# Run as a script (`python probe.py ...` inside `ip netns exec`), so it imports nothing of the
# project: starting it costs tens of milliseconds, not a second of imports.


def connect(host: str, port: int, timeout_s: float, from_port: int | None) -> dict[str, object]:
    """Connect once; the outcome (connected, refused, timeout, unreachable), how long it took,
    the local address and, from a `serve` probe, the address it saw us at."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    # a fixed source port again right after its last use: the earlier connection may linger
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if from_port is not None:
        sock.bind(("0.0.0.0", from_port))
    start = time.monotonic()
    result: dict[str, object] = {"outcome": "connected", "observed": None, "local": None}
    try:
        sock.connect((host, port))
        result["local"] = "{}:{}".format(*sock.getsockname())
        result["observed"] = sock.recv(256).decode().strip() or None
    except TimeoutError:
        result["outcome"] = "timeout"
    except ConnectionRefusedError:
        result["outcome"] = "refused"
    except OSError as exc:
        unreachable = (errno.ENETUNREACH, errno.EHOSTUNREACH)
        result["outcome"] = "unreachable" if exc.errno in unreachable else f"error: {exc}"
    finally:
        sock.close()
    result["elapsed_s"] = round(time.monotonic() - start, 3)
    return result


def serve(host: str, port: int) -> None:
    """Accept connections until killed; tell each caller the address it came from."""
    with socket.create_server((host, port), reuse_port=False) as server:
        print("listening", flush=True)
        while True:
            conn, (peer_ip, peer_port) = server.accept()
            with conn:
                conn.sendall(f"{peer_ip}:{peer_port}\n".encode())


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    connecting = sub.add_parser("connect")
    connecting.add_argument("host")
    connecting.add_argument("port", type=int)
    connecting.add_argument("--timeout", type=float, default=2.0)
    connecting.add_argument("--from-port", type=int)
    serving = sub.add_parser("serve")
    serving.add_argument("host")
    serving.add_argument("port", type=int)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        serve(args.host, args.port)
    else:
        print(json.dumps(connect(args.host, args.port, args.timeout, args.from_port)))


if __name__ == "__main__":
    main(sys.argv[1:])
