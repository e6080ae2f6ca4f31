"""Which tickets are unclear before any model reads them (``serving/clarity.py``)."""

from __future__ import annotations

import pytest

from hybrid_assets.serving.clarity import unresolved_reference


@pytest.mark.parametrize("ticket", ["It's not working again.", "Can you cancel it for me?", "Why is this happening??",
                                    "Please change it back.", "We need help with the thing from yesterday."])
def test_a_first_message_about_something_it_never_names_is_unclear(ticket):
    assert unresolved_reference(ticket)


@pytest.mark.parametrize("ticket", [
    "Is it possible to print 4x6 labels on a Zebra?",  # dummy "it"
    "Where do the arizona cardinals play this week",  # "this" + a time word
    "My Zebra GK420d cuts off the bottom of every ZPL label and it happens every day.",  # long, names it
    "The labels are wrong.",  # vague, but names its subject: the model decides
])
def test_named_subjects_dummy_pronouns_and_long_tickets_are_not(ticket):
    assert not unresolved_reference(ticket)


def test_an_earlier_turn_can_say_what_it_is():
    history = [{"role": "user", "content": "Our Shopify sync stopped."}, {"role": "assistant", "content": "..."}]
    assert not unresolved_reference("It's not working again.", history)
