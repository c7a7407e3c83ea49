"""A local Slack: the Web API the bot calls, and Slack's side of the requests it receives."""

from bot.sandbox.client import BotReply, SlackClientSim
from bot.sandbox.server import DEMO_CHANNELS, DEMO_USERGROUPS, DEMO_USERS, Sandbox
from bot.sandbox.store import BOT_ID, BOT_USER_ID, TEAM_ID, Call, Ephemeral, Store

__all__ = [
    "BOT_ID",
    "BOT_USER_ID",
    "DEMO_CHANNELS",
    "DEMO_USERGROUPS",
    "DEMO_USERS",
    "TEAM_ID",
    "BotReply",
    "Call",
    "Ephemeral",
    "Sandbox",
    "SlackClientSim",
    "Store",
]
