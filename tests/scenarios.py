"""Starting points several tests share, built through the product's own doors (the CLI, the API, a worker)."""

from __future__ import annotations

from core.settings import Settings
from mailroom.fake_nylas import FakeNylas
from tests.commands import mailroom
from tests.harness import api_in_process, drain
from tests.notifications import envelope, message, post


async def urgent_email_waiting_at_act(settings: Settings, fake_nylas: FakeNylas) -> None:
    """`act` paused, then an urgent email (one whose rules star it) stored and classified: it waits at act."""
    code, _, err = await mailroom(settings, "pause", "--stage", "act")
    assert code == 0, err
    urgent = fake_nylas.add_message(message(message_id="urgent1", subject="Urgent: sign today"))
    async with api_in_process(settings) as client:
        await post(client, envelope(urgent))
    await drain(settings)
