"""Typed errors that become the short message a person sees; anything else is logged."""


class UserError(Exception):
    """Bad input or a refused action: the message is shown to the person, as is."""


class NotFound(UserError):
    pass


class Forbidden(UserError):
    pass
