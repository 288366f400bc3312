"""Two processes chatting through Redis.

Run it twice against one Redis, with different names:

    python examples/chat.py alice redis://localhost:6379
    python examples/chat.py bob   redis://localhost:6379

Each says hello, prints what the other says, and answers once.
"""

from __future__ import annotations

import sys

import anyio

import tidings


async def chat(name: str, url: str, rounds: int = 1) -> None:
    done = anyio.Event()
    answered = 0

    async with tidings.open_channels(url, namespace="chat") as channels:

        async def said(channel: tidings.Channel, event: str, data: dict[str, str]) -> None:
            nonlocal answered
            if data["from"] == name:
                return
            print(f"{name} heard {data['from']}: {data['text']}", flush=True)
            if data["text"] == "hello" and answered < rounds:
                answered += 1
                await channels.publish("room", "said", {"from": name, "text": "hi back"})
            elif data["text"] == "hi back":
                done.set()

        await channels.register("room", "said", said)
        # Say hello until someone is listening (the other process may start later).
        with anyio.fail_after(30):
            while True:
                listening = await channels.publish("room", "said", {"from": name, "text": "hello"})
                if listening >= 2:  # ourselves and the other
                    break
                await anyio.sleep(0.1)
            await done.wait()
            await anyio.sleep(0.2)  # let our own answer go out before leaving


if __name__ == "__main__":
    anyio.run(chat, sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "redis://localhost")
