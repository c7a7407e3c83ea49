"""What the bot does, one module per capability. `register_listeners` is the one place that
shows everything the app answers to."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from handlers import audit_witness, customers, departments, digests, home, notes, pipeline
from handlers.approvals import listeners as approvals
from handlers.commands import CommandRouter
from handlers.deps import Deps
from handlers.handoffs import listeners as handoffs
from handlers.sync import apply as sync


def register_listeners(app: AsyncApp, deps: Deps) -> CommandRouter:
    router = CommandRouter()
    deps.home_sections.update(handoffs=handoffs.home_section, approvals=approvals.home_section)
    customers.register(app, deps, router)
    handoffs.register(app, deps, router)
    approvals.register(app, deps, router)
    departments.register(app, deps, router)
    notes.register(app, deps, router)
    pipeline.register(router)
    home.register(app, deps)
    router.register(app, deps)
    return router


async def startup(deps: Deps) -> None:
    """Once, before the bot answers: join the department channels."""
    await departments.join_channels(deps)


def background_jobs(deps: Deps) -> list:
    """(name, interval in seconds, async fn()) for each periodic job."""
    return [
        *handoffs.jobs(deps),
        *approvals.jobs(deps),
        *sync.jobs(deps),
        *audit_witness.jobs(deps),
        *digests.jobs(deps),
    ]


async def drain(deps: Deps, within: float) -> None:
    """On stop, after the consumer and the jobs: let the work they started finish."""
    await sync.drain(deps, within)
    await deps.homes.drain(within)


def sync_handler(deps: Deps):
    """(handle(event, attempt), permanent error types) for the RabbitMQ consumer."""
    return sync.make_handler(deps)
