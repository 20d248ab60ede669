"""Word lists for the document filters, one per language, and how to load your own.

Stopwords are the function words every text of a language is full of ("the", "of", "and";
"le", "de", "et"; "der", "und", "ist"). Prose has 30-60% of them; a keyword list, a table of
numbers or a spam page has far fewer, which is what the stopword filter looks for. Chinese and
Japanese have none here: ROOTS did not filter them on stopwords, and with characters as words
the ratio would measure little.

Flagged words are the few terms that mark adult or spam pages. ROOTS used its flagged-word
filter for English only (at 4.5% of the words); we keep short lists for the European languages
with the same threshold. What to flag depends on your corpus and its use: pass your own list
with ``flagged_words_file`` (it replaces the built-in one for every language).

Every list here is written out by hand for tinyroots, lowercased, one string per language.
"""

STOPWORDS = {
    "en": frozenset("""
a about above after again against all am an and any are aren as at be because been before being
below between both but by can cannot could couldn did didn do does doesn doing don down during
each few for from further had hadn has hasn have haven having he her here hers herself him
himself his how i if in into is isn it its itself just let ll me more most mustn my myself no
nor not now of off on once only or other ought our ours ourselves out over own re same shan she
should shouldn so some such t than that the their theirs them themselves then there these they
this those through to too under until up ve very was wasn we were weren what when where which
while who whom why will with won would wouldn you your yours yourself yourselves
""".split()),
    "fr": frozenset("""
a à afin ai aie alors au aucun aussi autre aux avait avant avec avoir c ça car ce ceci cela celle
celles celui ces cet cette chaque ci comme comment d dans de des donc dont du elle elles en encore
entre est et été être eu eux fait il ils j je jusqu l la le les leur leurs lui m ma mais me même
mes moi mon n ne ni nos notre nous on ont or ou où par parce pas peu plus pour pourquoi qu quand
que quel quelle quels qui s sa sans se ses si son sont sous sur t ta te tes toi ton tous tout
toute toutes très tu un une vos votre vous y
""".split()),
    "es": frozenset("""
a al algo algunos ante antes aquel aquí así aunque cada como con contra cual cuando de del desde
donde dos e el él ella ellas ellos en entre era eran es esa ese eso esta está están estas este
esto estos fue fueron ha hace han hasta hay la las le les lo los más me mi mientras muy nada ni
no nos nosotros o os otra otro para pero poco por porque que quien se sea según ser si sí sin
sobre son su sus también tan te tiene todo todos tu un una uno unos y ya yo
""".split()),
    "de": frozenset("""
aber alle als also am an auch auf aus bei bin bis da damit dann das dass dem den denn der des
dich die dies diese diesem diesen dieser dieses doch du durch ein eine einem einen einer eines er
es etwas für gegen hat hatte haben hier ich ihr ihre im in ist ja jede jedem jeden jeder kann
kein keine man mehr mich mir mit muss nach nicht noch nun nur ob oder ohne schon sehr sein seine
sich sie sind so soll über um und uns unter vom von vor war waren was weil wenn werden wie wir
wird wo zu zum zur zwischen
""".split()),
    "ar": frozenset("""
في من على إلى عن مع هذا هذه ذلك تلك التي الذي الذين اللذين هو هي هم هن نحن أنا أنت أن إن كان
كانت يكون تكون لا لم لن ما ماذا متى كل بعض قد ثم أو أي حتى بين عند كما لكن غير بعد قبل هناك هنا
وهو وهي وقد وفي ومن وعلى وأن ولا إذا لقد منذ حيث أيضا فقط ليس كيف لماذا
""".split()),
    "hi": frozenset("""
का के की है हैं और में से को पर यह वह ये वे था थे थी भी तो ही एक इस उस इन उन जो कि ने लिए नहीं
कर करते करता करती किया हो होता होती होते गया गई तक या अपने अपना अपनी कुछ सब कोई जब तब यदि
साथ बाद पहले द्वारा वाले वाली रहा रही रहे
""".split()),
}

FLAGGED_WORDS = {
    "en": frozenset("""
porn porno pornographic xxx nsfw hentai camgirl camgirls escort escorts milf nude nudes
viagra cialis casino casinos jackpot payday
""".split()),
    "fr": frozenset("""
porno pornographique xxx nsfw hentai camgirl escort escortes nue nues viagra cialis casino
casinos
""".split()),
    "es": frozenset("""
porno pornografía pornográfico xxx nsfw hentai camgirl escort escorts desnuda desnudas viagra
cialis casino casinos
""".split()),
    "de": frozenset("""
porno pornografie pornografisch xxx nsfw hentai camgirl escort nackt nacktbilder viagra cialis
casino casinos
""".split()),
}


def load_word_list(path):
    """Read a word list: one word per line, lowercased; blank lines and # comments skipped.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "w.txt")
    >>> _ = open(p, "w").write("# mine\\nFoo\\n\\nbar\\n")
    >>> sorted(load_word_list(p))
    ['bar', 'foo']
    """
    try:
        with open(path, encoding="utf-8") as f:
            return frozenset(w.strip().lower() for w in f
                             if w.strip() and not w.lstrip().startswith("#"))
    except OSError as exc:
        raise FileNotFoundError(f"cannot read word list {path!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"word list {path!r} is not UTF-8 text") from None
