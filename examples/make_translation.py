"""Write the synthetic English -> French sentence pairs of examples/translation/ (deterministic).

    python examples/make_translation.py    # -> examples/translation/en_fr_{train,val}.jsonl

SYNTHETIC DATA: the pairs are built by a small grammar written for this project, not taken
from any corpus. Sentences are "SUBJECT [often] VERB OBJECT [TIME]." with optional negation,
in the present tense, and the French side follows the rules a learner meets first:

* gender and number: le/la/les, un/une/des, mon/ma/mes ("ma" -> "mon" before a vowel);
* elision before a vowel or mute h: l'oiseau, l'homme, j'aime, n'ouvre;
* adjectives agree (noir, noire, noirs, noires); colours follow the noun, petit/grand/joli
  come before it;
* conjugation: -er verbs (regarder), manger (nous mangeons), acheter (j'achète), ouvrir,
  vendre, voir;
* negation ne ... pas, with un/une/des -> de (d') after it: "je ne mange pas de pomme";
* "often" goes after the French verb: "le chat mange souvent la pomme".

Validation pairs are drawn with a different random stream and never repeat a training
sentence.
"""

import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "translation")
VOWELS = "aeiouéèêàâîôûh"      # every h-word used here has a mute h (l'homme)

# english singular, english plural, french singular, french plural, gender
ANIMATE = [
    ("cat", "cats", "chat", "chats", "m"),
    ("dog", "dogs", "chien", "chiens", "m"),
    ("boy", "boys", "garçon", "garçons", "m"),
    ("girl", "girls", "fille", "filles", "f"),
    ("woman", "women", "femme", "femmes", "f"),
    ("man", "men", "homme", "hommes", "m"),
    ("child", "children", "enfant", "enfants", "m"),
    ("bird", "birds", "oiseau", "oiseaux", "m"),
    ("friend", "friends", "ami", "amis", "m"),
    ("neighbour", "neighbours", "voisine", "voisines", "f"),
    ("horse", "horses", "cheval", "chevaux", "m"),
]
FOOD = [
    ("apple", "apples", "pomme", "pommes", "f"),
    ("cake", "cakes", "gâteau", "gâteaux", "m"),
    ("orange", "oranges", "orange", "oranges", "f"),
    ("bread", "breads", "pain", "pains", "m"),
]
CLOTHES = [
    ("shirt", "shirts", "chemise", "chemises", "f"),
    ("hat", "hats", "chapeau", "chapeaux", "m"),
]
THINGS = [
    ("book", "books", "livre", "livres", "m"),
    ("car", "cars", "voiture", "voitures", "f"),
    ("letter", "letters", "lettre", "lettres", "f"),
    ("door", "doors", "porte", "portes", "f"),
    ("window", "windows", "fenêtre", "fenêtres", "f"),
    ("key", "keys", "clé", "clés", "f"),
    ("bag", "bags", "sac", "sacs", "m"),
    ("bottle", "bottles", "bouteille", "bouteilles", "f"),
    ("chair", "chairs", "chaise", "chaises", "f"),
    ("umbrella", "umbrellas", "parapluie", "parapluies", "m"),
    ("table", "tables", "table", "tables", "f"),
    ("flower", "flowers", "fleur", "fleurs", "f"),
]
NOUNS = {n[0]: n for n in ANIMATE + FOOD + CLOTHES + THINGS}

# english adjective -> (m sg, f sg, m pl, f pl, comes before the noun)
ADJECTIVES = {
    "red": ("rouge", "rouge", "rouges", "rouges", False),
    "green": ("vert", "verte", "verts", "vertes", False),
    "black": ("noir", "noire", "noirs", "noires", False),
    "white": ("blanc", "blanche", "blancs", "blanches", False),
    "blue": ("bleu", "bleue", "bleus", "bleues", False),
    "small": ("petit", "petite", "petits", "petites", True),
    "big": ("grand", "grande", "grands", "grandes", True),
    "pretty": ("joli", "jolie", "jolis", "jolies", True),
}

# french present tense for je, tu, il/elle, nous, ils/elles
def _er(stem):
    return [stem + e for e in ("e", "es", "e", "ons", "ent")]


CONJ = {
    "regarder": _er("regard"), "aimer": _er("aim"), "chercher": _er("cherch"),
    "trouver": _er("trouv"), "porter": _er("port"), "laver": _er("lav"),
    "préparer": _er("prépar"), "fermer": _er("ferm"), "casser": _er("cass"),
    "manger": ["mange", "manges", "mange", "mangeons", "mangent"],
    "acheter": ["achète", "achètes", "achète", "achetons", "achètent"],
    "ouvrir": ["ouvre", "ouvres", "ouvre", "ouvrons", "ouvrent"],
    "vendre": ["vends", "vends", "vend", "vendons", "vendent"],
    "voir": ["vois", "vois", "voit", "voyons", "voient"],
}
ALL_OBJECTS = [n[0] for n in ANIMATE + FOOD + CLOTHES + THINGS]
# english verb (base, 3rd singular) -> french verb, objects it takes
VERBS = [
    (("eat", "eats"), "manger", [n[0] for n in FOOD]),
    (("buy", "buys"), "acheter", [n[0] for n in FOOD + CLOTHES + THINGS]),
    (("see", "sees"), "voir", ALL_OBJECTS),
    (("watch", "watches"), "regarder", ALL_OBJECTS),
    (("like", "likes"), "aimer", ALL_OBJECTS),
    (("look for", "looks for"), "chercher", ALL_OBJECTS),
    (("find", "finds"), "trouver", ALL_OBJECTS),
    (("wear", "wears"), "porter", [n[0] for n in CLOTHES]),
    (("carry", "carries"), "porter", ["bag", "umbrella", "book", "letter", "key", "bottle",
                                      "flower", "chair"]),
    (("wash", "washes"), "laver", ["car", "table", "door", "window", "shirt", "hat", "bottle",
                                   "chair", "dog", "cat", "horse"]),
    (("prepare", "prepares"), "préparer", ["cake", "bread", "bag"]),
    (("open", "opens"), "ouvrir", ["door", "window", "book", "letter", "bag", "bottle", "car"]),
    (("close", "closes"), "fermer", ["door", "window", "book", "bag", "bottle"]),
    (("break", "breaks"), "casser", ["bottle", "window", "chair", "table", "key", "door"]),
    (("sell", "sells"), "vendre", ["car", "book", "bag", "hat", "shirt", "bread", "cake",
                                   "horse", "flower"]),
]
PRONOUNS = [("I", "je", 0), ("you", "tu", 1), ("he", "il", 2), ("she", "elle", 2),
            ("we", "nous", 3), ("they", "ils", 4)]
TIMES = [("today", "aujourd'hui"), ("every day", "tous les jours"),
         ("in the morning", "le matin"), ("tonight", "ce soir"), ("on Sundays", "le dimanche")]


def join(words):
    """Join French words, applying elision: le oiseau -> l'oiseau, je aime -> j'aime."""
    out = []
    for w in words:
        if out and out[-1] in ("le", "la", "je", "ne", "de") and w[0].lower() in VOWELS:
            out[-1] = out[-1][0] + "'" + w
        else:
            out.append(w)
    return " ".join(out).replace("' ", "'")


def noun_phrase(noun, plural, det, adj, negated=False):
    """-> (english words, french words) for DET [ADJ] NOUN; det is "the", "a" or "my".

        ("apple", plural, "a", "red")            -> some red apples / des pommes rouges
        ("apple", singular, "a", None, negated)  -> an apple        / de pomme (after "pas")
    """
    en_sg, en_pl, fr_sg, fr_pl, g = NOUNS[noun]
    en_det = ("any" if negated else "some") if det == "a" and plural else det
    en = [en_det] + ([adj] if adj else []) + [en_pl if plural else en_sg]
    if en[0] == "a" and en[1][0] in "aeiou":
        en[0] = "an"
    pre, post = [], []
    if adj:
        forms = ADJECTIVES[adj]
        form = forms[(2 if plural else 0) + (1 if g == "f" else 0)]
        (pre if forms[4] else post).append(form)
    fr_noun = fr_pl if plural else fr_sg
    first = (pre + [fr_noun])[0]
    if det == "the":
        fr_det = "les" if plural else ("le" if g == "m" else "la")
    elif det == "a":
        # "des" becomes "de" after a negation and before an adjective: de jolies fleurs
        fr_det = "de" if negated or (plural and pre) else \
            ("des" if plural else ("un" if g == "m" else "une"))
    else:   # "ma" becomes "mon" before a vowel: mon orange
        fr_det = "mes" if plural else ("mon" if g == "m" or first[0] in VOWELS else "ma")
    return en, [fr_det] + pre + [fr_noun] + post


def sentence(rng):
    """One (english, french) pair."""
    # subject
    if rng.random() < 0.45:
        en_subj, fr_subj, person = rng.choice(PRONOUNS)
        en_subj, fr_subj = [en_subj], [fr_subj]
    else:
        noun = rng.choice([n[0] for n in ANIMATE])
        plural = rng.random() < 0.35
        det = rng.choice(["the", "the", "my", "a"])
        adj = rng.choice(list(ADJECTIVES)) if rng.random() < 0.3 else None
        en_subj, fr_subj = noun_phrase(noun, plural, det, adj)
        person = 4 if plural else 2
    (en_base, en_3sg), fr_verb, objects = rng.choice(VERBS)
    obj = rng.choice(objects)
    negated = rng.random() < 0.25
    often = not negated and rng.random() < 0.15
    o_plural = rng.random() < 0.3
    o_det = rng.choice(["the", "the", "a", "my"])
    o_adj = rng.choice(list(ADJECTIVES)) if rng.random() < 0.4 else None
    en_obj, fr_obj = noun_phrase(obj, o_plural, o_det, o_adj, negated)
    third_singular = person == 2
    en = list(en_subj)
    if negated:
        en += ["does not" if third_singular else "do not", en_base]
    else:
        en += (["often"] if often else []) + [en_3sg if third_singular else en_base]
    en += en_obj
    verb = CONJ[fr_verb][person]
    fr = list(fr_subj)
    fr += ["ne", verb, "pas"] if negated else [verb] + (["souvent"] if often else [])
    fr += fr_obj
    if rng.random() < 0.3:
        en_t, fr_t = rng.choice(TIMES)
        en.append(en_t)
        fr.append(fr_t)
    en_text = " ".join(en)
    fr_text = join(fr)
    return en_text[0].upper() + en_text[1:] + ".", fr_text[0].upper() + fr_text[1:] + "."


def pairs(n, rng, exclude=()):
    rows, seen = [], set(exclude)
    while len(rows) < n:
        en, fr = sentence(rng)
        if en in seen:
            continue
        seen.add(en)
        rows.append({"source": en, "target": fr})
    return rows


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows):>5} lines to {os.path.relpath(path)}")


def main():
    os.makedirs(OUT, exist_ok=True)
    train = pairs(3000, random.Random(11))
    val = pairs(120, random.Random(12), exclude={r["source"] for r in train})
    write_jsonl(os.path.join(OUT, "en_fr_train.jsonl"), train)
    write_jsonl(os.path.join(OUT, "en_fr_val.jsonl"), val)


if __name__ == "__main__":
    main()
