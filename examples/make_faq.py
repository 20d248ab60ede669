"""Write the synthetic customer-service data sets of examples/faq/ (deterministic).

    python examples/make_faq.py     # -> examples/faq/{intent,chat}_{train,val,paraphrase}.jsonl

SYNTHETIC DATA: every line is generated from the templates below for the imaginary shop
"Tinyroots Outfitters"; no real customer wrote any of it. Two data sets come out:

* intent classification, {"text": ..., "label": ...}: a customer's message and one of eight
  intents (track_order, cancel_order, return_item, refund_status, change_address,
  shipping_options, reset_password, update_payment). About a third of the messages also
  mention a *different* topic in passing, negated or already settled ("I already got my
  refund, but where is my parcel?"), so picking the label from a keyword is not enough.
* chat dialogues, {"messages": [...]}: the same kind of message answered by the assistant,
  sometimes after a system prompt, sometimes with a follow-up turn.

Two held-out sets score a model on messages it has not seen:

* ``*_val.jsonl``: the training frames with a different random stream (the sentence shapes
  are shared, the filled-in details are not); any text that occurs in training is dropped;
* ``*_paraphrase.jsonl``: frames kept back from training, filled with items, cities and
  streets training never names. A third of them are sentences written whole for it (none
  shares a run of five words with a training frame), a third are kept-back asks and problems
  in training's sentence shapes, a third are training's asks and problems in sentence shapes
  training never uses. They use the shop's words, which training spreads over many shapes
  (make_faq prints the few words only the paraphrases use): a model that learned which words
  carry an intent passes, one that memorised the templates does not.

The training frames are many on purpose (about 250 per intent): each intent's key words
("cancel", "call off", "scrap", "undo") appear in several sentence shapes and word orders, so
no single template carries an intent.

Messages vary in surface too: greetings, asides, contractions, dropped punctuation, lower
case, and up to two typos. Dialogues carry their "intent", so a reply can be checked for
answering the right question.
"""

import json
import os
import random
import re

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "faq")

ITEMS = ["blue jacket", "coffee maker", "pair of boots", "wool scarf", "desk lamp",
         "backpack", "rain coat", "phone case", "yoga mat", "water bottle", "sweater",
         "pair of headphones", "tea kettle", "winter hat", "travel mug", "pair of sneakers",
         "leather wallet", "cotton t-shirt", "sleeping bag", "camping stove", "pair of socks",
         "fleece jacket", "tent", "rucksack", "pair of sandals", "knit cap", "linen shirt",
         "cooking pot", "head torch", "camp chair", "sun hat", "pair of jeans", "hoodie",
         "rain poncho", "umbrella", "pillow", "bath towel", "reading lamp", "pocket knife",
         "duffel bag"]
CITIES = ["Lyon", "Denver", "Leeds", "Porto", "Austin", "Dublin", "Oslo", "Boston",
          "Glasgow", "Seattle", "Nantes", "Toronto", "Madrid", "Berlin", "Vienna", "Chicago",
          "Lisbon", "Bristol", "Quebec", "Perth", "Helsinki", "Zurich", "Naples", "Dallas"]
STREETS = ["Oak Street", "Mill Road", "Pine Avenue", "Harbor Lane", "King Street",
           "Elm Court", "River Road", "Station Square", "Maple Drive", "Park Lane",
           "High Street", "Church Road", "Bridge Street", "Willow Way", "Market Place",
           "Cedar Road"]
# details the training set never names: the paraphrase set uses only these
NEW_ITEMS = ["hiking pole", "picnic blanket", "flannel shirt", "thermos", "bike helmet",
             "pair of gloves", "denim skirt", "lantern"]
NEW_CITIES = ["Kyoto", "Tampere", "Cork", "Bergen", "Halifax", "Graz"]
NEW_STREETS = ["Birch Walk", "Quarry Lane", "Canal Row"]

# How a customer names the thing they ask about; {obj} in a frame is one of these.
OBJECTS = ["my order {order}", "order {order}", "my {item}", "the {item} I ordered",
           "my parcel", "my package", "my delivery", "my shipment", "my order"]

# The messages are built from three kinds of pieces, each kept per intent:
# * SENTENCES: whole frames written out, each one way of saying the intent;
# * ASKS: what the customer wants done, a verb phrase ("cancel {obj}") that sentence shapes
#   such as "Could you {vp} for me?" or "I want to {vp}." wrap;
# * PROBLEMS: what went wrong, a clause ("{obj} never came") that shapes such as
#   "{S}, what can I do?" or "Sorry to bother you, but {s}." wrap.
# {obj} {order} {item} {days} {city} {street} are filled in. Every piece and shape is split
# into the part training uses and a part kept back for the paraphrase set (the second list of
# each pair). The kept-back frames are new sentence shapes and new word orders, some of them new
# wholes, the rest known phrases inside shapes training never uses; their words are the shop's
# words that training uses elsewhere (check_held_out says which are not), so the set asks
# whether a model learned what the messages mean, not which templates they came from. A model
# that only ever saw Shakespeare and this shop cannot know a word the shop's data never shows.
SENTENCES = {
    "track_order": ([
        "Where is {obj}?",
        "{Obj} has not arrived yet, can you check where it is?",
        "Can you tell me the status of {obj}?",
        "I ordered a {item} {days} days ago and it still hasn't shown up.",
        "How can I track {obj}?",
        "The tracking page for {obj} has not updated in {days} days.",
        "When will {obj} be delivered?",
        "Is {obj} on its way?",
        "I am still waiting for {obj}, where is it?",
        "Could you find out where {obj} is right now?",
        "Any news on {obj}?",
        "Has {obj} left the warehouse?",
        "Where on earth is {obj}? It should be here by now.",
        "{Obj}: shipped or not?",
        "Still no {item} after {days} days, where is it?",
        "What happened to {obj}? No sign of it yet.",
        "Tracking says nothing about {obj}, is it lost?",
        "I haven't seen {obj} yet; is it still in the mail?",
        "Nothing at my door so far, {obj} was due yesterday.",
        "When does {obj} get here? The tracking is stuck.",
        "Nowhere in the tracking do I see {obj}, where is it?",
    ], [
        "It's been {days} days and {obj} is nowhere to be seen.",
        "Has {obj} shipped yet? I can't see it anywhere.",
        "I'm wondering when {obj} will finally get here.",
        "No sign of {obj} so far, what is going on?",
        "{Obj} seems to be lost in the mail.",
        "{Days} days now and still no {item} at my door.",
        "Did {obj} get lost? It should have arrived by now.",
    ]),
    "cancel_order": ([
        "Please cancel {obj}.",
        "I want to cancel the {item} I ordered.",
        "Can I still cancel {obj}?",
        "How do I cancel an order I placed {days} days ago?",
        "Cancel {obj} before it ships, please.",
        "I changed my mind about the {item}, can you cancel it?",
        "Is it too late to cancel {obj}?",
        "I need to cancel my purchase of a {item}.",
        "Please don't ship {obj}, I want to cancel it.",
        "Stop {obj}, I don't need it anymore.",
        "Forget {obj}, I want to call it off.",
        "The {item}? Cancel it please, I want out of that order.",
        "Don't send {obj}, I changed my mind.",
        "Scrap the order for the {item}, I have no use for it.",
        "Undo {obj} please, I placed it by mistake.",
        "That whole order for the {item}, call it off please.",
        "Call off the {item} order, I changed my mind.",
        "Please call {obj} off, I ordered it by mistake.",
    ], [
        "I would like to call off {obj}.",
        "Forget about {obj}, I don't want it any more.",
        "Scrap {obj} please, I found it cheaper elsewhere.",
        "Can you make sure {obj} is never sent? I want out of it.",
        "I regret buying the {item}, undo the purchase.",
        "No longer need the {item}, so please stop the order.",
        "Before {obj} ships, could you cancel the whole thing?",
    ]),
    "return_item": ([
        "I want to return the {item} I bought.",
        "How do I send back my {item}?",
        "The {item} is the wrong size, can I return it?",
        "Can I return {obj}?",
        "My {item} arrived damaged and I would like to send it back.",
        "What is your return policy for a {item}?",
        "I need a return label for {obj}.",
        "The {item} does not fit, how do I return it?",
        "Can I bring the {item} back if I don't like it?",
        "Where do I ship a {item} I want to return?",
        "Do you take returns on a {item} I wore once?",
        "The {item} is too small, can I exchange it?",
        "Returning the {item}: how does that work?",
        "Not happy with the {item}, it is going back to you.",
        "Can the {item} go back to your warehouse? It came scratched.",
        "The box was crushed and the {item} inside is broken, I'm sending the {item} back.",
        "Can a worn {item} be returned?",
    ], [
        "This {item} is not what I expected, can it go back to you?",
        "The {item} came with a scratch, I don't want to keep it.",
        "Do you take back a {item} that was worn once?",
        "How can I get the {item} back to your warehouse?",
        "I'd like to exchange the {item}, it is too small.",
        "The {item} I got is too big, I'm sending it back.",
        "Damaged {item} in the box, what is the way to return it?",
    ]),
    "refund_status": ([
        "When will I get my refund for {obj}?",
        "I returned the {item} {days} days ago and still have no refund.",
        "Has my refund been processed?",
        "Where is my money for the returned {item}?",
        "Can you check the refund for {obj}?",
        "How long does a refund take?",
        "I sent the {item} back, when do I get my money?",
        "Is my refund for {obj} on its way?",
        "You received my return {days} days ago, where is the refund?",
        "My card still shows no refund for the {item}.",
        "When is the returned {item} credited back to me?",
        "Still waiting to be reimbursed, I sent the {item} back.",
        "The refund: when does the money reach my bank?",
        "No money back yet for the {item} I returned {days} days ago.",
        "Two weeks since my return and the refund has still not reached my card.",
    ], [
        "The money for the {item} I sent back hasn't shown up on my card.",
        "When do I get reimbursed for the returned {item}?",
        "It's been {days} days since you got my return and I have not been refunded.",
        "My bank shows no refund for {obj} yet.",
        "How many days until the returned {item} is credited back?",
        "Returned the {item} weeks ago; where is my money?",
        "Has the refund for the {item} been sent to my card yet?",
    ]),
    "change_address": ([
        "I need to change the delivery address for {obj}.",
        "Can you send my {item} to {street} in {city} instead?",
        "I moved to {city}, please update my shipping address.",
        "Please ship {obj} to a different address.",
        "How do I update my address before {obj} ships?",
        "My address is wrong on {obj}, it should be {street}.",
        "Can I change where my {item} is delivered?",
        "Please deliver {obj} to my office on {street}.",
        "Update the address on my account to {street}, {city}.",
        "The delivery address for {obj} is old, I live in {city} now.",
        "New address for {obj}: {street}, {city}.",
        "{Street} is where {obj} should go now, not my old place.",
        "I relocated last week, so my shipping details need changing.",
        "The house number on {obj} is wrong, please fix it.",
        "Please have {obj} redirected to my new address.",
    ], [
        "I've relocated to {city}; {obj} should go to {street} from now on.",
        "Could {obj} be redirected to {street}?",
        "Wrong house number on {obj}, the right one is {street}.",
        "Send {obj} to my new place on {street} in {city}, please.",
        "My shipping details are out of date, I'm on {street} now.",
        "Since I moved to {city}, where I live is {street}; please change it on {obj}.",
        "The street on {obj} is old, it is {street} now.",
    ]),
    "shipping_options": ([
        "How much does shipping to {city} cost?",
        "Do you offer express delivery?",
        "How long does shipping take to {city}?",
        "Can I get a {item} by tomorrow?",
        "Do you ship to {city}?",
        "Is shipping free for orders over fifty dollars?",
        "What delivery options do you have for a {item}?",
        "How many days does standard shipping take?",
        "Can I pay extra for faster delivery of a {item}?",
        "Which carriers do you use for delivery to {city}?",
        "Which delivery can I choose for a {item}?",
        "What does next day delivery cost?",
        "Is overnight shipping an option at checkout?",
        "Delivery to {city}: how soon and how much?",
        "Do you deliver abroad?",
        "Is there a cheaper delivery if I can wait?",
        "What are your shipping fees for a {item}?",
        "What is your cheapest delivery to {city}?",
    ], [
        "If I order a {item} today, how soon could it reach {city}?",
        "Is there a cheaper, slower way to get a {item} delivered?",
        "Do you deliver abroad, for example to {city}?",
        "What are the delivery fees for a small order?",
        "Can I choose overnight shipping at checkout?",
        "To {city}, what would shipping a {item} cost me?",
        "Fast delivery of a {item} to {city}, is that possible?",
    ]),
    "reset_password": ([
        "I forgot my password.",
        "I can't log in to my account.",
        "How do I reset my password?",
        "The password reset email never arrived.",
        "My account is locked after too many login attempts.",
        "I need a new password for my account.",
        "The login page says my password is wrong.",
        "Can you help me get back into my account?",
        "The reset link for my password has expired.",
        "I can't sign in, it keeps rejecting my password.",
        "How do I change my password?",
        "I don't remember my login details.",
        "Locked out again, my password stopped working.",
        "Password not accepted since yesterday, what do I do?",
        "Signing in fails every time, can you resend the reset email?",
        "The site refused my password when I type it, I want to set a new one.",
    ], [
        "I'm locked out of my account, what should I do?",
        "My login doesn't work any more since yesterday.",
        "How can I set a new password? The old one stopped working.",
        "Sign in fails every time I type my password.",
        "I never got the email to reset my password, can you resend it?",
        "Since this morning my password is refused when I log in.",
        "Which page do I use to get a new password?",
    ]),
    "update_payment": ([
        "How do I change the card on my account?",
        "My payment for {obj} was declined.",
        "I want to pay for my {item} with a different card.",
        "Can I update my billing details?",
        "My credit card expired, how do I add a new one?",
        "Why was my card charged twice for {obj}?",
        "Please remove my old card from my account.",
        "Can I pay for {obj} with a gift card?",
        "The payment for my {item} did not go through.",
        "I need to update my payment method before {obj} is charged.",
        "How do I add a new credit card?",
        "Card declined at checkout for the {item}, why?",
        "Charged twice for {obj}, my statement says so.",
        "My bank sent me a new card, how do I change it here?",
        "From now on I pay with another card, the old one is replaced.",
        "Where do I enter my new card details? My old card was refused.",
    ], [
        "My bank card was replaced, where do I enter the new number?",
        "The checkout keeps refusing my card for the {item}.",
        "I'd like to pay with another card from now on.",
        "Can I switch the card that {obj} gets charged to?",
        "I see a double charge on my statement for {obj}.",
        "Declined again! My card will not go through for {obj}.",
        "Where in my account can the card I pay with be changed?",
    ]),
}

ASKS = {
    "track_order": ([
        "track {obj}", "find out where {obj} is", "check the status of {obj}",
        "see when {obj} will arrive", "get an update on {obj}", "locate {obj}",
        "follow the delivery of {obj}", "know if {obj} has shipped",
    ], ["find {obj}", "know when {obj} gets here"]),
    "cancel_order": ([
        "cancel {obj}", "drop the order for the {item}", "stop {obj} before it ships",
        "scrap {obj}",
        "undo my purchase of the {item}", "cancel the order for my {item}",
        "make sure the {item} is not sent out", "get out of {obj}",
    ], ["cancel my {item} order", "stop the order for the {item}"]),
    "return_item": ([
        "return the {item}", "send back the {item}", "send the {item} back to you",
        "get a return label for {obj}", "swap the {item} for another size",
        "return something from {obj}", "ship the {item} to your warehouse",
        "bring the {item} back",
    ], ["return my {item}", "send my {item} back"]),
    "refund_status": ([
        "check my refund for {obj}", "get my money back for the returned {item}",
        "find out when I will be reimbursed", "see the status of my refund",
        "receive the refund for {obj}", "know when the refund reaches my card",
        "know when the {item} money is credited back", "get paid back for the {item}",
    ], ["see my refund for the {item}", "get back the money for {obj}"]),
    "change_address": ([
        "change the delivery address for {obj}", "send {obj} to {street} instead",
        "update my shipping address to {street}, {city}", "redirect {obj} to {street}",
        "deliver {obj} to my new home in {city}", "fix the street on {obj}",
        "correct the house number for {obj}", "ship my {item} to a different address",
    ], ["change my address to {street}", "have {obj} delivered to {city} instead"]),
    "shipping_options": ([
        "find out how much shipping to {city} costs", "have a {item} by tomorrow",
        "get express delivery", "pick overnight shipping",
        "find a cheaper, slower delivery", "ship a {item} to {city}",
        "see your delivery options", "know how long shipping to {city} takes",
    ], ["get a {item} delivered fast", "know the shipping fees to {city}"]),
    "reset_password": ([
        "reset my password", "change my password", "get back into my account",
        "log in to my account", "unlock my account", "receive a new password",
        "get a new reset link", "recover my login details",
    ], ["sign in again", "set a new password"]),
    "update_payment": ([
        "change the card on my account", "update my billing details",
        "add a new credit card", "use another card for {obj}", "remove my old card",
        "use a gift card", "switch which card {obj} is charged to",
        "update my payment method", "enter new card details",
    ], ["enter my new card number", "pay for the {item} with a different card"]),
}

PROBLEMS = {
    "track_order": ([
        "{obj} has not arrived yet", "{obj} never came", "{obj} is late",
        "{obj} is still not here after {days} days", "there is no sign of {obj}",
        "it seems {obj} got lost", "the tracking for {obj} has not changed in {days} days",
        "I have been waiting {days} days for {obj}",
    ], ["{obj} is nowhere to be seen", "{obj} was due {days} days ago and is still not here"]),
    "cancel_order": ([
        "I ordered the {item} by mistake", "I changed my mind about the {item}",
        "I no longer want {obj}", "I don't need {obj} any more",
        "I regret this purchase of a {item}", "I found the {item} cheaper elsewhere",
        "I placed {obj} by accident", "I don't want the {item} after all",
    ], ["I bought the {item} by mistake", "I do not want {obj} any more"]),
    "return_item": ([
        "the {item} is the wrong size", "the {item} does not fit",
        "the {item} arrived damaged", "the {item} is broken", "there is a scratch on the {item}",
        "the {item} is nothing like what I expected", "the {item} is too small",
        "the {item} is too big",
    ], ["the {item} I got does not fit", "the {item} came broken"]),
    "refund_status": ([
        "my refund for {obj} has not arrived", "the {item} has not been refunded",
        "I still have not been paid back for the {item}",
        "the money for the returned {item} is not on my card", "no refund shows up at my bank",
        "the refund for my {item} is missing",
        "you got my return {days} days ago and I have no refund",
        "I sent the {item} back {days} days ago and have not been reimbursed",
    ], ["the returned {item} has not been credited back", "my refund is late"]),
    "change_address": ([
        "I moved to {city}", "I have relocated to {city}", "my address on {obj} is wrong",
        "I typed the wrong street for {obj}",
        "my shipping details need updating, they are out of date",
        "I live on {street} now", "the house number on {obj} is wrong",
        "{obj} has my old address",
    ], ["I just moved to {street}", "the address on {obj} is out of date"]),
    "shipping_options": ([
        "I need the {item} by tomorrow", "I want the fastest delivery you have",
        "standard shipping is too slow for me", "I live in {city} and wonder what delivery costs",
        "I want to know your shipping fees", "I need a {item} delivered to {city} fast",
        "I wonder if you ship abroad", "I want to know how long delivery takes",
    ], ["I want the cheapest shipping to {city}", "I need overnight delivery"]),
    "reset_password": ([
        "I forgot my password", "I can't log in", "the site has locked me out",
        "my password stopped working", "the reset email never arrived",
        "sign in fails again and again", "the reset link has expired",
        "I don't remember my login details",
    ], ["my account is locked", "my login does not work any more"]),
    "update_payment": ([
        "my payment for {obj} was declined", "my card was charged twice for {obj}",
        "my credit card expired", "the checkout refuses my card every time",
        "the payment for the {item} did not go through",
        "my statement shows a double charge", "the bank replaced my card",
        "my card keeps getting declined", "I was charged twice for the {item}",
    ], ["my card was refused for {obj}", "I got charged twice"]),
}

# sentence shapes around an ask ({vp}) or a problem ({s}; {S} starts with a capital)
ASK_SHAPES = ([
    "Please {vp}.", "Can you {vp}?", "I want to {vp}.", "I need to {vp}.", "How do I {vp}?",
    "Could you {vp} for me?", "I would like to {vp}.", "Is it possible to {vp}?",
    "Help me {vp}, please.", "How can I {vp}?", "I'm trying to {vp}.", "Can I {vp}?",
    "Where do I go to {vp}?", "I'd like you to {vp}.", "{VP}, please.",
    "What's the best way to {vp}?", "I was hoping you could {vp}.",
], [
    "What should I do to {vp}?", "Would you be able to {vp}?", "Is there a way to {vp}?",
    "I was hoping to {vp}, can you help?", "Any chance I could {vp}?",
])
PROBLEM_SHAPES = ([
    "{S}.", "{S}, can you help?", "{S}, what can I do?", "I think {s}.", "{S} and I need help.",
    "Help, {s}!", "Sorry to bother you, but {s}.", "{S}. What now?", "So {s}. Any ideas?",
    "I'm writing because {s}.", "{S}, please look into it.", "Unfortunately {s}.",
], [
    "{S}; what are my options?", "It looks like {s}.",
    "Just so you know, {s}. Can you sort it out?",
    "Well, {s}, so what should I do?", "{S} and I don't know what to do.",
])


def upper1(text):
    """'my order' -> 'My order'; '{obj} never came' -> '{Obj} never came' (new_slots fills
    both spellings)."""
    i = 1 if text.startswith("{") else 0
    return text[:i] + text[i].upper() + text[i + 1:]


def composed(intent, part):
    """The frames of one intent in three groups that a message picks from with equal odds.
    part 0 (training): its SENTENCES, its ASKS in ASK_SHAPES, its PROBLEMS in PROBLEM_SHAPES.
    part 1 (kept back): the held-out sentences; the held-out pieces in training's shapes; every
    piece in the held-out shapes."""
    def shaped(pieces, shapes, key):
        return [shape.format(**{key: p, key.upper(): upper1(p)}) for shape in shapes
                for p in pieces]
    asks, problems = ASKS[intent], PROBLEMS[intent]
    if part == 0:
        groups = [SENTENCES[intent][0], shaped(asks[0], ASK_SHAPES[0], "vp"),
                  shaped(problems[0], PROBLEM_SHAPES[0], "s")]
    else:
        groups = [SENTENCES[intent][1],
                  shaped(asks[1], ASK_SHAPES[0], "vp")
                  + shaped(problems[1], PROBLEM_SHAPES[0], "s"),
                  shaped(asks[0] + asks[1], ASK_SHAPES[1], "vp")
                  + shaped(problems[0] + problems[1], PROBLEM_SHAPES[1], "s")]
    # a lower-case "{obj}" opening a sentence is written "{Obj}"
    return [[f.replace(". {obj}", ". {Obj}") for f in g] for g in groups]


INTENTS = {intent: composed(intent, 0) for intent in SENTENCES}
PARAPHRASES = {intent: composed(intent, 1) for intent in SENTENCES}

# a remark about a *different* topic, negated or already settled: a distractor
ASIDES = {
    "track_order": ["I know where my parcel is", "the tracking works fine",
                    "my {item} already arrived"],
    "cancel_order": ["I don't want to cancel anything", "no need to cancel the order",
                     "I am not cancelling"],
    "return_item": ["I am not returning anything", "this is not about a return",
                    "I want to keep the {item}"],
    "refund_status": ["I already got my refund", "the refund arrived fine",
                      "this is not about a refund"],
    "change_address": ["my address is correct", "the address is fine",
                       "I have not moved"],
    "shipping_options": ["shipping was fast", "delivery is not the issue",
                         "the shipping cost is fine"],
    "reset_password": ["I can log in fine", "my password works",
                       "this is not about my password"],
    "update_payment": ["my card is fine", "the payment went through",
                       "billing is not the problem"],
}
OPENERS = ["", "", "", "Hi, ", "Hello, ", "Hey, ", "Good morning, ", "Hi there. ",
           "Quick question: "]
CLOSERS = ["", "", "", " Thanks!", " Thank you.", " Please help.", " Thanks in advance.",
           " Cheers."]

# {ref} is "order #12345" when the customer gave the number, else "your order"
ANSWERS = {
    "track_order": "I checked {ref}: it left our warehouse and should arrive within {eta} "
                   "days. You can follow it under Account > Orders > Track.",
    "cancel_order": "I can cancel {ref} as long as it has not shipped. Open Account > Orders, "
                    "choose the order and press Cancel; the refund follows in 3 to 5 days.",
    "return_item": "You can return items within 30 days. Go to Account > Orders, pick {ref} "
                   "and choose Return to print a free return label.",
    "refund_status": "Refunds are sent within 5 business days after we receive the return. "
                     "The refund for {ref} is being processed, so the money should reach you "
                     "soon.",
    "change_address": "I can change the address while {ref} has not shipped. Reply with the "
                      "full new address and I will update it.",
    "shipping_options": "Standard shipping takes 3 to 5 days and is free over 50 dollars. "
                        "Express takes 1 to 2 days and costs 9 dollars.",
    "reset_password": "Use Forgot password on the sign-in page and we will email you a reset "
                      "link that works for one hour. Check your spam folder if it is missing.",
    "update_payment": "You can manage your cards under Account > Payment methods. Add the new "
                      "card there and set it as default before the order is charged.",
}
FOLLOW_UPS = [
    ("Thanks, that helps!", "You're welcome! Is there anything else I can do for you?"),
    ("Great, thank you.", "Happy to help. Have a nice day!"),
    ("How long will that take?", "Usually no more than a few days. I will email you as soon "
                                 "as anything changes."),
    ("Can I talk to a person?", "Of course. Our team is available 9am to 6pm on weekdays at "
                                "support@tinyroots.example, or reply here and I will pass it "
                                "on."),
]
SYSTEM_PROMPTS = [
    "You are the support assistant of Tinyroots Outfitters. Answer briefly and politely.",
    "You help customers of an online outdoor shop. Be friendly and precise.",
]


def new_slots(rng, unseen=False):
    """Random details for one message; unseen=True draws items, cities and streets that the
    training set never names."""
    items, cities, streets = ((NEW_ITEMS, NEW_CITIES, NEW_STREETS) if unseen
                              else (ITEMS, CITIES, STREETS))
    slots = {"order": f"#{rng.randint(10000, 99999)}", "item": rng.choice(items),
             "days": rng.randint(2, 14), "city": rng.choice(cities),
             "street": f"{rng.randint(1, 200)} {rng.choice(streets)}", "eta": rng.randint(2, 5)}
    slots["obj"] = rng.choice(OBJECTS).format(**slots)
    # a slot opening a sentence is written capitalised ({Obj}, {Street}, {Days})
    slots.update({k.capitalize(): upper1(str(v)) for k, v in list(slots.items())})
    return slots


def typo(text, rng):
    """One slip of a fast typist in a random word: two neighbouring letters swapped, a letter
    dropped or a letter doubled."""
    words = text.split(" ")
    i = rng.randrange(len(words))
    w = words[i]
    if len(w) > 3 and w.isalpha():
        j = rng.randrange(len(w) - 1)
        kind = rng.randrange(3)
        if kind == 0:
            w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        elif kind == 1:
            w = w[:j] + w[j + 1:]
        else:
            w = w[:j] + w[j] + w[j:]
        words[i] = w
    return " ".join(words)


CONTRACTIONS = [("does not", "doesn't"), ("has not", "hasn't"), ("do not", "don't"),
                ("is not", "isn't"), ("I am", "I'm"), ("can not", "can't"), ("I would", "I'd")]


def vary(text, rng):
    """Surface variety that keeps the meaning: contractions either way, a dropped final
    question mark or full stop, lower case, typos."""
    for full, short in CONTRACTIONS:
        if rng.random() < 0.5:
            text = text.replace(full, short)
        else:
            text = text.replace(short, full)
    if rng.random() < 0.15:
        text = text.rstrip(".?!")
    for _ in range(2):
        if rng.random() < 0.2:
            text = typo(text, rng)
    if rng.random() < 0.2:
        text = text.lower()
    return text


def message(intent, rng, slots, aside_prob=0.35, frames=INTENTS):
    """-> (one customer message for intent, whether it gives the order number). The message
    may get a greeting, an aside about another topic, contractions, typos, or be lower case."""
    template = rng.choice(rng.choice(frames[intent]))
    text = template.format(**slots)
    if rng.random() < aside_prob:
        other = rng.choice([k for k in INTENTS if k != intent])
        aside = rng.choice(ASIDES[other]).format(**slots)
        if rng.random() < 0.5:
            if not text.startswith(("I ", "I'")):
                text = text[0].lower() + text[1:]
            text = f"{upper1(aside)}, but {text}"
        else:
            text = f"{text} To be clear, {aside}."
    opener = rng.choice(OPENERS)
    if opener.endswith(", ") and not text.startswith(("I ", "I'")):
        text = text[0].lower() + text[1:]
    text = vary(opener + text + rng.choice(CLOSERS), rng)
    return text.strip(), "{order}" in template or slots["order"] in text


def intents(n, rng, exclude=(), frames=INTENTS, unseen=False):
    rows, seen = [], set(exclude)
    names = sorted(INTENTS)
    while len(rows) < n:
        intent = names[len(rows) % len(names)]          # balanced classes
        text, _ = message(intent, rng, new_slots(rng, unseen), frames=frames)
        if text in seen:
            continue
        seen.add(text)
        rows.append({"text": text, "label": intent})
    rng.shuffle(rows)
    return rows


def dialogues(n, rng, exclude=(), frames=INTENTS, unseen=False, aside_prob=0.15):
    rows, seen = [], set(exclude)
    names = sorted(INTENTS)
    while len(rows) < n:
        intent = names[len(rows) % len(names)]
        slots = new_slots(rng, unseen)
        user, gave_order = message(intent, rng, slots, aside_prob=aside_prob, frames=frames)
        if user in seen:
            continue
        seen.add(user)
        msgs = []
        if rng.random() < 0.5:
            msgs.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        msgs.append({"role": "user", "content": user})
        ref = f"order {slots['order']}" if gave_order else "your order"
        msgs.append({"role": "assistant", "content": ANSWERS[intent].format(ref=ref, **slots)})
        if rng.random() < 0.3:
            q, a = rng.choice(FOLLOW_UPS)
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        rows.append({"messages": msgs, "intent": intent})
    rng.shuffle(rows)
    return rows


def frame_words(frames):
    """The lower-case words of frames, slot names left out."""
    text = " ".join(frames).lower()
    return set(re.findall(r"[a-z']+", re.sub(r"\{[a-z]+\}", " ", text)))


def word_runs(frame, n=5):
    """The runs of n words in a frame, a slot counting as a word; contractions are spelt out
    (vary() may write either form)."""
    text = frame.lower()
    for full, short in CONTRACTIONS:
        text = text.replace(short.lower(), full.lower())
    w = re.findall(r"[a-z']+|\{[a-z]+\}", text)
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def check_held_out():
    """The paraphrase frames are not training frames, and the ones written whole share no run
    of five words with any training frame; -> the words the paraphrase frames use that no
    training text does (the set tests new shapes with the shop's words: this list should be
    short, and these words are the part no model trained on this data can know)."""
    train = {f for groups in INTENTS.values() for g in groups for f in g}
    held = {f for groups in PARAPHRASES.values() for g in groups for f in g}
    both = train & held
    if both:
        raise SystemExit(f"make_faq: paraphrase frames also in training: {sorted(both)[:3]}")
    runs = set().union(*(word_runs(f) for f in train))
    for groups in PARAPHRASES.values():
        for frame in groups[0]:
            shared = word_runs(frame) & runs
            if shared:
                raise SystemExit(f"make_faq: the paraphrase frame {frame!r} shares "
                                 f"{' '.join(sorted(shared)[0])!r} with a training frame")
    around = OPENERS + CLOSERS + OBJECTS + [a for v in ASIDES.values() for a in v]
    return sorted(frame_words(held) - frame_words(list(train) + around))


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows):>5} lines to {os.path.relpath(path)}")


def first_user_turn(dialogue):
    return next(m["content"] for m in dialogue["messages"] if m["role"] == "user")


def main():
    os.makedirs(OUT, exist_ok=True)
    new_words = check_held_out()
    print(f"paraphrase frames use {len(new_words)} words no training frame uses: "
          f"{' '.join(new_words)}")
    train = intents(4000, random.Random(1))
    seen = {r["text"] for r in train}
    val = intents(480, random.Random(2), exclude=seen)
    paraphrase = intents(480, random.Random(5), exclude=seen, frames=PARAPHRASES, unseen=True)
    write_jsonl(os.path.join(OUT, "intent_train.jsonl"), train)
    write_jsonl(os.path.join(OUT, "intent_val.jsonl"), val)
    write_jsonl(os.path.join(OUT, "intent_paraphrase.jsonl"), paraphrase)
    # training mentions a second topic more often than the held-out sets, so that the bot
    # learns to answer the question, not the aside
    chat_train = dialogues(2400, random.Random(3), aside_prob=0.3)
    first_user = {first_user_turn(d) for d in chat_train}
    chat_val = dialogues(64, random.Random(4), exclude=first_user)
    chat_paraphrase = dialogues(128, random.Random(6), exclude=first_user, frames=PARAPHRASES,
                                unseen=True)
    write_jsonl(os.path.join(OUT, "chat_train.jsonl"), chat_train)
    write_jsonl(os.path.join(OUT, "chat_val.jsonl"), chat_val)
    write_jsonl(os.path.join(OUT, "chat_paraphrase.jsonl"), chat_paraphrase)


if __name__ == "__main__":
    main()
