"""The one check flow both bots run (bots.core.CheckBot.answer), against the real service,
through a Conversation that records what a platform would be asked to show."""

import re
import uuid

import pytest
import requests

from bots.core import FRIENDLY, SOMETHING_WRONG, CheckBot, Conversation, Reply, ServiceClient, UserTold
from bots.settings import BotSettings

from .conftest import shared

PNG = b"\x89PNG\r\n\x1a\n"


class Recorded(Conversation):
    def __init__(self):
        self.statuses: list[str] = []
        self.results: list[Reply] = []
        self.galleries: list[bytes] = []
        self.events = 0

    async def status(self, text: str) -> None:
        self.statuses.append(text)

    async def result(self, reply: Reply) -> None:
        self.results.append(reply)

    async def gallery(self, reply: Reply, png: bytes) -> None:
        self.galleries.append(png)

    async def working(self, event: dict) -> None:
        self.events += 1


def job_gets(service) -> float:
    """How many GET /v1/checks/{id} the API has answered."""
    m = requests.get(service.base + "/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(
        r'deepfake_api_requests_total\{[^}]*method="GET"[^}]*route="/v1/checks/\{id\}"[^}]*\} (\S+)', m))


@pytest.fixture
async def bot(service):
    client = ServiceClient(service.base, service.token(f"flow-{uuid.uuid4().hex[:8]}"))
    yield CheckBot(BotSettings(api_url=service.base), client)
    await client.close()


async def test_a_check_goes_through_the_hooks_and_the_final_event_is_enough(service, bot, loopback):
    loopback.routes["/rudd.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                    shared("media", "unlabeled", "paul_rudd.jpg").read_bytes())
    conv = Recorded()
    before = job_gets(service)
    await bot.answer(conv, lambda: bot.client.submit_url(loopback.url("/rudd.jpg")))
    assert conv.statuses and conv.events >= len(conv.statuses)  # one status per stage, every event seen
    assert len(set(conv.statuses)) == len(conv.statuses)  # a stage is shown once, never going back
    assert conv.statuses.index("Downloading the medium…") < conv.statuses.index("Opening the file…")
    assert any("Looking for faces" in s for s in conv.statuses)
    (reply,) = conv.results
    assert reply.score is not None and "probability that the faces were manipulated" in reply.headline
    assert reply.shots == [] and reply.notes[0].startswith("Below 35%")  # an image: no line repeating it
    assert len(conv.galleries) == 1 and conv.galleries[0][:8] == PNG
    assert job_gets(service) == before  # the terminal event carried the final view


async def test_a_refused_link_and_a_bug_each_end_with_one_sentence(bot):
    conv = Recorded()
    await bot.answer(conv, lambda: bot.client.submit_url("http://10.1.2.3/x.mp4"))
    assert conv.statuses == [FRIENDLY["private-address"]] and not conv.results

    async def broken() -> dict:
        raise KeyError("a bug in an adapter")

    conv = Recorded()
    with pytest.raises(UserTold) as told:
        await bot.answer(conv, broken)
    assert conv.statuses == [SOMETHING_WRONG] and isinstance(told.value.__cause__, KeyError)
