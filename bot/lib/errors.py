"""Typed errors that become the short message a person sees; anything else is logged.

The mapping from an error to that answer is `bot.lib.interaction.answer_for`, the one place
that decides what a person reads when something goes wrong.
"""


class UserError(Exception):
    """Bad input or a refused action: the message is shown to the person, as is."""


class NotFound(UserError):
    pass


class Forbidden(UserError):
    pass
