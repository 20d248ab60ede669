"""Write the synthetic customer-service data sets of examples/faq/ (deterministic).

    python examples/make_faq.py            # -> examples/faq/{intent,chat}_{train,val}.jsonl

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
* ``*_paraphrase.jsonl``: frames kept back from training (other sentence shapes and words
  for the same intents) filled with items, cities and streets training never names. A model
  that memorised the templates scores high on val and low here.

Messages vary in surface too: greetings, asides, contractions, dropped punctuation, lower
case, and up to two typos. Dialogues carry their "intent", so a reply can be checked for
answering the right question.
"""

import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "faq")

ITEMS = ["blue jacket", "coffee maker", "pair of boots", "wool scarf", "desk lamp",
         "backpack", "rain coat", "phone case", "yoga mat", "water bottle", "sweater",
         "pair of headphones", "tea kettle", "winter hat", "travel mug", "pair of sneakers",
         "leather wallet", "cotton t-shirt", "sleeping bag", "camping stove"]
CITIES = ["Lyon", "Denver", "Leeds", "Porto", "Austin", "Dublin", "Oslo", "Boston",
          "Glasgow", "Seattle", "Nantes", "Toronto"]
STREETS = ["Oak Street", "Mill Road", "Pine Avenue", "Harbor Lane", "King Street",
           "Elm Court", "River Road", "Station Square"]
# details the training set never names: the paraphrase set uses only these
NEW_ITEMS = ["hiking pole", "picnic blanket", "flannel shirt", "thermos", "bike helmet",
             "pair of gloves", "denim skirt", "lantern"]
NEW_CITIES = ["Kyoto", "Tampere", "Cork", "Bergen", "Halifax", "Graz"]
NEW_STREETS = ["Birch Walk", "Quarry Lane", "Canal Row"]

# How a customer names the thing they ask about; {obj} in a frame is one of these.
OBJECTS = ["my order {order}", "order {order}", "my {item}", "the {item} I ordered",
           "my parcel", "my package", "my delivery", "my shipment", "my order"]

# intent -> (frames the training set is made of, frames kept back for the paraphrase set).
# A frame is one way of saying the intent; {obj} {order} {item} {days} {city} {street} are
# filled in. The kept-back frames say the same thing with other sentence shapes and words
# (mostly words the training frames use elsewhere), so only a model that learned what the
# messages mean, not which templates they came from, classifies them right.
FRAMES = {
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
        "{Obj} never came.",
        "{Obj} is late.",
        "Any news on {obj}?",
        "{Obj} still isn't here after {days} days.",
    ], [
        "It's been {days} days and {obj} is nowhere to be seen.",
        "Has {obj} shipped yet? I can't see it anywhere.",
        "I'm wondering when {obj} will finally get here.",
        "No sign of {obj} so far, what is going on?",
        "{Obj} seems to be lost in the mail.",
    ]),
    "cancel_order": ([
        "Please cancel {obj}.",
        "I want to cancel the {item} I ordered.",
        "Can I still cancel {obj}?",
        "I ordered a {item} by mistake, please stop the order.",
        "How do I cancel an order I placed {days} days ago?",
        "Cancel {obj} before it ships, please.",
        "I changed my mind about the {item}, can you cancel it?",
        "Is it too late to cancel {obj}?",
        "I need to cancel my purchase of a {item}.",
        "Please don't ship {obj}, I want to cancel it.",
        "I no longer want {obj}.",
        "Stop {obj}, I don't need it anymore.",
    ], [
        "I would like to call off {obj}.",
        "Forget about {obj}, I don't want it any more.",
        "Scrap {obj} please, I found it cheaper elsewhere.",
        "Can you make sure {obj} is never sent? I want out of it.",
        "I regret buying the {item}, undo the purchase.",
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
        "I'd like to return something from {obj}.",
        "The {item} is broken, I want to send it back.",
        "Where do I ship a {item} I want to return?",
    ], [
        "This {item} is not what I expected, can it go back to you?",
        "The {item} came with a scratch, I don't want to keep it.",
        "Do you take back a {item} that was worn once?",
        "How can I get the {item} back to your warehouse?",
        "I'd like to exchange the {item}, it is too small.",
    ]),
    "refund_status": ([
        "When will I get my refund for {obj}?",
        "I returned the {item} {days} days ago and still have no refund.",
        "Has my refund been processed?",
        "Where is my money for the returned {item}?",
        "Can you check the refund for {obj}?",
        "My refund for {obj} has not reached my account yet.",
        "How long does a refund take?",
        "I sent the {item} back, when do I get my money?",
        "The refund for my {item} is missing.",
        "Is my refund for {obj} on its way?",
        "I still have not been paid back for the {item}.",
        "You received my return {days} days ago, where is the refund?",
    ], [
        "The money for the {item} I sent back hasn't shown up on my card.",
        "When do I get reimbursed for the returned {item}?",
        "It's been {days} days since you got my return and I have not been refunded.",
        "My bank shows no refund for {obj} yet.",
        "How many days until the returned {item} is credited back?",
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
        "I typed the wrong street for my {item}, can you fix it?",
        "Update the address on my account to {street}, {city}.",
        "The delivery address for {obj} is old, I live in {city} now.",
    ], [
        "I've relocated to {city}; {obj} should go to {street} from now on.",
        "Could {obj} be redirected to {street}?",
        "Wrong house number on {obj}, the right one is {street}.",
        "Send {obj} to my new place on {street} in {city}, please.",
        "My shipping details are out of date, I'm on {street} now.",
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
        "What does next day delivery cost?",
    ], [
        "If I order a {item} today, how soon could it reach {city}?",
        "Is there a cheaper, slower way to get a {item} delivered?",
        "Do you deliver abroad, for example to {city}?",
        "What are the delivery fees for a small order?",
        "Can I choose overnight shipping at checkout?",
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
    ], [
        "I'm locked out of my account, what should I do?",
        "My login doesn't work any more since yesterday.",
        "How can I set a new password? The old one stopped working.",
        "Sign in fails every time I type my password.",
        "I never got the email to reset my password, can you resend it?",
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
    ], [
        "My bank card was replaced, where do I enter the new number?",
        "The checkout keeps refusing my card for the {item}.",
        "I'd like to pay with another card from now on.",
        "Can I switch the card that {obj} gets charged to?",
        "I see a double charge on my statement for {obj}.",
    ]),
}
INTENTS = {intent: train for intent, (train, _) in FRAMES.items()}
PARAPHRASES = {intent: held for intent, (_, held) in FRAMES.items()}

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
    obj = rng.choice(OBJECTS).format(**slots)
    slots.update(obj=obj, Obj=obj[0].upper() + obj[1:])
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
    template = rng.choice(frames[intent])
    text = template.format(**slots)
    if rng.random() < aside_prob:
        other = rng.choice([k for k in INTENTS if k != intent])
        aside = rng.choice(ASIDES[other]).format(**slots)
        if rng.random() < 0.5:
            text = f"{aside[0].upper()}{aside[1:]}, but {text[0].lower()}{text[1:]}"
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


def dialogues(n, rng, exclude=(), frames=INTENTS, unseen=False):
    rows, seen = [], set(exclude)
    names = sorted(INTENTS)
    while len(rows) < n:
        intent = names[len(rows) % len(names)]
        slots = new_slots(rng, unseen)
        user, gave_order = message(intent, rng, slots, aside_prob=0.15, frames=frames)
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


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows):>5} lines to {os.path.relpath(path)}")


def first_user_turn(dialogue):
    return next(m["content"] for m in dialogue["messages"] if m["role"] == "user")


def main():
    os.makedirs(OUT, exist_ok=True)
    train = intents(2400, random.Random(1))
    seen = {r["text"] for r in train}
    val = intents(480, random.Random(2), exclude=seen)
    paraphrase = intents(480, random.Random(5), exclude=seen, frames=PARAPHRASES, unseen=True)
    write_jsonl(os.path.join(OUT, "intent_train.jsonl"), train)
    write_jsonl(os.path.join(OUT, "intent_val.jsonl"), val)
    write_jsonl(os.path.join(OUT, "intent_paraphrase.jsonl"), paraphrase)
    chat_train = dialogues(800, random.Random(3))
    first_user = {first_user_turn(d) for d in chat_train}
    chat_val = dialogues(64, random.Random(4), exclude=first_user)
    chat_paraphrase = dialogues(64, random.Random(6), exclude=first_user, frames=PARAPHRASES,
                                unseen=True)
    write_jsonl(os.path.join(OUT, "chat_train.jsonl"), chat_train)
    write_jsonl(os.path.join(OUT, "chat_val.jsonl"), chat_val)
    write_jsonl(os.path.join(OUT, "chat_paraphrase.jsonl"), chat_paraphrase)


if __name__ == "__main__":
    main()
