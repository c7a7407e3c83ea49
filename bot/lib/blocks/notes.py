"""Notes: the `Add note` modal (from the card's button and the "Add to customer record"
message shortcut) and the notes section of the full card."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import Block, date, esc, modal, section, text_input, user

if TYPE_CHECKING:
    from storage.notes import NoteItem

ADD = "customer_note"  # the card's `Add note` button, value = customer id
SHORTCUT = "add_to_customer_record"
VIEW = "note_add"
CUSTOMER_BLOCK, CUSTOMER_ACTION = "note_customer", "customer"
TEXT_BLOCK, TEXT_ACTION = "note_text", "text"
NOTE_LIMIT = 3000
CARD_LINE = 300


def add_modal(
    private_metadata: str,
    *,
    customer_label: str | None = None,
    customer_ref: str | None = None,
    ask_customer: bool = False,
    text: str | None = None,
) -> Block:
    """The note and, when it came from a message, the customer (prefilled when the message
    names one): a customer's email address or external id."""
    blocks: list[Block] = []
    if customer_label and not ask_customer:
        blocks.append(section(f"Note on *{esc(customer_label)}*'s record"))
    if ask_customer:
        blocks.append(
            text_input(
                CUSTOMER_BLOCK,
                "Customer (email address or external id)",
                CUSTOMER_ACTION,
                max_length=254,
                initial=customer_ref,
            )
        )
    blocks.append(
        text_input(
            TEXT_BLOCK,
            "Note (everyone working on this customer sees it)",
            TEXT_ACTION,
            multiline=True,
            max_length=NOTE_LIMIT,
            initial=(text or "")[:NOTE_LIMIT] or None,
        )
    )
    return modal(
        VIEW, "Add to customer record", blocks, submit="Add note", private_metadata=private_metadata
    )


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def note_line(n: NoteItem, department_names: dict[str, str]) -> str:
    text = esc(_clip(n.text, CARD_LINE)) if n.text is not None else "_(not readable)_"
    dept = department_names.get(n.department or "", n.department or "")
    who = user(n.author) + (f" ({esc(dept)})" if dept else "")
    link = (
        f" · <{esc(n.permalink)}|message>" if n.permalink and n.permalink.startswith("http") else ""
    )
    return f"• {date(n.added_at)} {who}: {text}{link}"


def notes_section(notes: Sequence[NoteItem], department_names: dict[str, str]) -> Block:
    lines = [note_line(n, department_names) for n in notes]
    return section("*Notes from the team*\n" + ("\n".join(lines) if lines else "_none_"))
