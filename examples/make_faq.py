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

Validation examples come from the same templates with a different random stream, and any
text that also occurs in the training set is dropped from validation, so a model is scored
on messages it has not seen (the phrasings are shared, the filled-in details are not).
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

# intent -> message templates; {order} {item} {days} {city} {street} are filled in
INTENTS = {
    "track_order": [
        "Where is my order {order}?",
        "My {item} has not arrived yet, can you check where it is?",
        "Can you tell me the status of order {order}?",
        "I ordered a {item} {days} days ago and it still hasn't shown up.",
        "How can I track my package?",
        "The tracking page for {order} has not updated in {days} days.",
        "When will my {item} be delivered?",
        "Is order {order} on its way?",
        "I am still waiting for my parcel, where is it?",
        "Could you find out where my {item} is right now?",
    ],
    "cancel_order": [
        "Please cancel my order {order}.",
        "I want to cancel the {item} I ordered.",
        "Can I still cancel order {order}?",
        "I ordered a {item} by mistake, please stop the order.",
        "How do I cancel an order I placed {days} days ago?",
        "Cancel order {order} before it ships, please.",
        "I changed my mind about the {item}, can you cancel it?",
        "Is it too late to cancel {order}?",
        "I need to cancel my purchase of a {item}.",
        "Please don't ship {order}, I want to cancel it.",
    ],
    "return_item": [
        "I want to return the {item} I bought.",
        "How do I send back my {item}?",
        "The {item} is the wrong size, can I return it?",
        "Can I return order {order}?",
        "My {item} arrived damaged and I would like to send it back.",
        "What is your return policy for a {item}?",
        "I need a return label for order {order}.",
        "The {item} does not fit, how do I return it?",
        "Can I bring the {item} back if I don't like it?",
        "I'd like to return something from order {order}.",
    ],
    "refund_status": [
        "When will I get my refund for {order}?",
        "I returned the {item} {days} days ago and still have no refund.",
        "Has my refund been processed?",
        "Where is my money for the returned {item}?",
        "Can you check the refund for order {order}?",
        "My refund for {order} has not reached my account yet.",
        "How long does a refund take?",
        "I sent the {item} back, when do I get my money?",
        "The refund for my {item} is missing.",
        "Is my refund for {order} on its way?",
    ],
    "change_address": [
        "I need to change the delivery address for {order}.",
        "Can you send my {item} to {street} in {city} instead?",
        "I moved to {city}, please update my shipping address.",
        "Please ship order {order} to a different address.",
        "How do I update my address before {order} ships?",
        "My address is wrong on order {order}, it should be {street}.",
        "Can I change where my {item} is delivered?",
        "Please deliver {order} to my office on {street}.",
        "I typed the wrong street for my {item}, can you fix it?",
        "Update the address on my account to {street}, {city}.",
    ],
    "shipping_options": [
        "How much does shipping to {city} cost?",
        "Do you offer express delivery?",
        "How long does shipping take to {city}?",
        "Can I get my {item} by tomorrow?",
        "Do you ship to {city}?",
        "Is shipping free for orders over fifty dollars?",
        "What delivery options do you have for a {item}?",
        "How many days does standard shipping take?",
        "Can I pay extra for faster delivery of my {item}?",
        "Which carriers do you use for delivery to {city}?",
    ],
    "reset_password": [
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
    ],
    "update_payment": [
        "How do I change the card on my account?",
        "My payment for {order} was declined.",
        "I want to pay for my {item} with a different card.",
        "Can I update my billing details?",
        "My credit card expired, how do I add a new one?",
        "Why was my card charged twice for {order}?",
        "Please remove my old card from my account.",
        "Can I pay for {order} with a gift card?",
        "The payment for my {item} did not go through.",
        "I need to update my payment method before {order} is charged.",
    ],
}

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


def new_slots(rng):
    return {"order": f"#{rng.randint(10000, 99999)}", "item": rng.choice(ITEMS),
            "days": rng.randint(2, 14), "city": rng.choice(CITIES),
            "street": f"{rng.randint(1, 200)} {rng.choice(STREETS)}", "eta": rng.randint(2, 5)}


def typo(text, rng):
    """Swap two neighbouring letters of one random word (customers type fast)."""
    words = text.split(" ")
    i = rng.randrange(len(words))
    w = words[i]
    if len(w) > 3 and w.isalpha():
        j = rng.randrange(len(w) - 1)
        words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(words)


def message(intent, rng, slots, aside_prob=0.35):
    """-> (one customer message for intent, whether it gives the order number). The message
    may get a greeting, an aside about another topic, a typo, or be all lower case."""
    template = rng.choice(INTENTS[intent])
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
    text = opener + text + rng.choice(CLOSERS)
    if rng.random() < 0.15:
        text = typo(text, rng)
    if rng.random() < 0.2:
        text = text.lower()
    return text.strip(), "{order}" in template


def intents(n, rng, exclude=()):
    rows, seen = [], set(exclude)
    names = sorted(INTENTS)
    while len(rows) < n:
        intent = names[len(rows) % len(names)]          # balanced classes
        text, _ = message(intent, rng, new_slots(rng))
        if text in seen:
            continue
        seen.add(text)
        rows.append({"text": text, "label": intent})
    rng.shuffle(rows)
    return rows


def dialogues(n, rng, exclude=()):
    rows, seen = [], set(exclude)
    names = sorted(INTENTS)
    while len(rows) < n:
        intent = names[len(rows) % len(names)]
        slots = new_slots(rng)
        user, gave_order = message(intent, rng, slots, aside_prob=0.15)
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
        rows.append({"messages": msgs})
    rng.shuffle(rows)
    return rows


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows):>5} lines to {os.path.relpath(path)}")


def main():
    os.makedirs(OUT, exist_ok=True)
    train = intents(2400, random.Random(1))
    val = intents(480, random.Random(2), exclude={r["text"] for r in train})
    write_jsonl(os.path.join(OUT, "intent_train.jsonl"), train)
    write_jsonl(os.path.join(OUT, "intent_val.jsonl"), val)
    chat_train = dialogues(400, random.Random(3))
    first_user = {next(m["content"] for m in d["messages"] if m["role"] == "user")
                  for d in chat_train}
    chat_val = dialogues(64, random.Random(4), exclude=first_user)
    write_jsonl(os.path.join(OUT, "chat_train.jsonl"), chat_train)
    write_jsonl(os.path.join(OUT, "chat_val.jsonl"), chat_val)


if __name__ == "__main__":
    main()
