"""Periods that end no sentence: abbreviations, initials, numbers and list items (pysbd's English
rules, written so that each costs next to nothing on text that has nothing for it).

Python's `re` scans fast for a pattern that starts with a literal character and slowly for one that
starts with a look-behind, which is how pysbd writes most of these; so periods are visited once in
Python (there is about one per sentence) and the remaining patterns run only where a cheap test
says they can match. Each protected character becomes a placeholder (see `sentences.py`).
"""

from __future__ import annotations

import re

PERIOD = "∯"  # pysbd's placeholder for a period that ends no sentence, named in its patterns below
LIST_PERIOD, LIST_PAREN, LEFT_PAREN = "\ue007", "\ue008", "\ue005"

ABBREVIATIONS = (
    "adj adm adv al ala alta apr arc ariz ark art assn asst attys aug ave bart bld bldg blvd brig bros btw cal "
    "calif capt cl cmdr co col colo comdr con conn corp cpl cres ct d.phil dak dec del dept det dist dr "
    "dr.phil dr.philos drs e.g ens esp esq etc exp expy ext feb fed fla ft fwy fy ga gen gov hon hosp hr "
    "hway hwy i.e ia id ida ill inc ind ing insp is jan jr jul jun kan kans ken ky la lt ltd maj man mar "
    "mass may md me med messrs mex mfg mich min minn miss mlle mm mme mo mont mr mrs ms msgr mssrs mt mtn "
    "neb nebr nev no nos nov nr oct ok okla ont op ord ore p pa pd pde penn penna pfc ph ph.d pl plz pp "
    "prof pvt que rd rs ref rep reps res rev rt sask sec sen sens sep sept sfc sgt sr st supt surg tce "
    "tenn tex univ usafa u.s ut va v ver viz vs vt wash wis wisc wy wyo yuk fig").split()
PREPOSITIVE = frozenset(("adm attys brig capt cmdr col cpl det dr gen gov ing lt maj mr mrs ms mt messrs mssrs "
                         "prof ph rep reps rev sen sens sgt st supt v vs fig").split())
NUMBER_ABBREVIATIONS = frozenset("art ext no nos p pp".split())
OTHER_ABBREVIATIONS = frozenset(a for a in ABBREVIATIONS if a not in PREPOSITIVE | NUMBER_ABBREVIATIONS)
# pysbd looks dotted abbreviations up with the dot unescaped, so there it stands for any character.
DOTTED_ABBREVIATION = re.compile("|".join(a for a in OTHER_ABBREVIATIONS if "." in a))
AFTER_OTHER_ABBREVIATION = re.compile(r"[.:\-?,]|\s(?:[a-z]|I\s|I'm|I'll|\d|\()")
SENTENCE_STARTERS = ("A Being Did For He How However I In It Millions More She That The There They We What "
                     "When Where Who Why").split()

ANY_PERIOD = re.compile(r"\.")
MULTI_PERIOD_HINT = re.compile(r"\.[a-zA-Z]\.")
MULTI_PERIOD_ABBREVIATION = re.compile(r"\b[a-z](?:\.[a-z])+[.]", re.IGNORECASE)
AM_PM = [(re.compile(r"(?<= P∯M)∯(?=\s[A-Z])"), "P∯M"), (re.compile(r"(?<=A∯M)∯(?=\s[A-Z])"), "A∯M"),
         (re.compile(r"(?<=p∯m)∯(?=\s[A-Z])"), "p∯m"), (re.compile(r"(?<=a∯m)∯(?=\s[A-Z])"), "a∯m")]
ABBREVIATION_BEFORE_STARTER = re.compile(
    r"(U∯S|U\.S|U∯K|E∯U|E\.U|U∯S∯A|U\.S\.A|I|i.v|I.V)∯(" + "|".join(rf"(?=\s{w}\s)" for w in SENTENCE_STARTERS)
    + ")")

DIGIT_PERIOD = re.compile(r"\d\.")
PERIOD_BEFORE_DIGIT = re.compile(r"\.(?=\d)")
DIGIT_PERIOD_NOT_SPACE = re.compile(r"(?<=\d)\.(?=\S)")
LINE_START_NUMBER = [re.compile(r"(?<=\r\d)\.(?=(\s\S)|\))"), re.compile(r"(?<=^\d)\.(?=(\s\S)|\))"),
                     re.compile(r"(?<=^\d\d)\.(?=(\s\S)|\))")]

# Lists: "1. one 2. two", "a. one b. two", "(i) one (ii) two" are items, not sentences.
ROMAN_NUMERALS = "i ii iii iv v vi vii viii ix x xi xii xiii xiv x xi xii xiii xv xvi xvii xviii xix xx".split()
LATIN_LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
LETTER_LIST_HINT = re.compile(r" [a-z]\.")
LETTER_BEFORE_PERIOD = re.compile(r"(?<=^)[a-z](?=\.)|(?<=\A)[a-z](?=\.)|(?<=\s)[a-z](?=\.)")
LETTERS_BEFORE_PAREN = re.compile(r"(?<=\()[a-z]+(?=\))|(?<=^)[a-z]+(?=\))|(?<=\A)[a-z]+(?=\))|(?<=\s)[a-z]+(?=\))")
LETTER_AND_PERIOD = re.compile(r"(?<=^)[a-z]\.|(?<=\A)[a-z]\.|(?<=\s)[a-z]\.", re.IGNORECASE)
LETTERS_AND_PAREN = re.compile(r"\([a-z]+(?=\))|(?<=^)[a-z]+(?=\))|(?<=\A)[a-z]+(?=\))|(?<=\s)[a-z]+(?=\))",
                               re.IGNORECASE)
NUMBER_BEFORE_PERIOD = re.compile(
    r"\s\d{1,2}(?=\.\s)|^\d{1,2}(?=\.\s)|\s\d{1,2}(?=\.\))|^\d{1,2}(?=\.\))|(?<=\s\-)\d{1,2}(?=\.\s)"
    r"|(?<=^\-)\d{1,2}(?=\.\s)|(?<=\s\⁃)\d{1,2}(?=\.\s)|(?<=^\⁃)\d{1,2}(?=\.\s)|(?<=s\-)\d{1,2}(?=\.\))"
    r"|(?<=^\-)\d{1,2}(?=\.\))|(?<=\s\⁃)\d{1,2}(?=\.\))|(?<=^\⁃)\d{1,2}(?=\.\))")
NUMBER_AND_PERIOD = re.compile(
    r"(?<=\s)\d{1,2}\.(?=\s)|^\d{1,2}\.(?=\s)|(?<=\s)\d{1,2}\.(?=\))|^\d{1,2}\.(?=\))|(?<=\s\-)\d{1,2}\.(?=\s)"
    r"|(?<=^\-)\d{1,2}\.(?=\s)|(?<=\s\⁃)\d{1,2}\.(?=\s)|(?<=^\⁃)\d{1,2}\.(?=\s)|(?<=\s\-)\d{1,2}\.(?=\))"
    r"|(?<=^\-)\d{1,2}\.(?=\))|(?<=\s\⁃)\d{1,2}\.(?=\))|(?<=^\⁃)\d{1,2}\.(?=\))")
NUMBER_BEFORE_PAREN = re.compile(r"\d{1,2}(?=\)\s)")
DIGIT_PAREN = re.compile(r"\d\)")
NUMBER_ITEM_HINT = re.compile(r"\d\.[\s)]")
BREAK_BEFORE_NUMBERED = [re.compile(rf"(?<=\S\S)\s(?=\S\s*\d+{LIST_PERIOD})"),
                         re.compile(rf"(?<=\S\S)\s(?=\d{{1,2}}{LIST_PERIOD})")]
BREAK_BEFORE_PAREN_NUMBERED = re.compile(rf"(?<=\S\S)\s(?=\d{{1,2}}{LIST_PAREN})")
NUMBERED_ACROSS_LINES = re.compile(rf"{LIST_PERIOD}.+(\n|\r).+{LIST_PERIOD}")
PAREN_NUMBERED_ACROSS_LINES = re.compile(rf"{LIST_PAREN}.+[\n\r].+{LIST_PAREN}")
FOR_NUMBER = re.compile(rf"for\s\d{{1,2}}{LIST_PERIOD}\s[a-z]")


def _ends_no_sentence(text: str, i: int) -> bool:
    """Whether the period at `i` belongs to an abbreviation, an initial or a possessive ("U.S.'s")."""
    following = text[i + 1:i + 4]
    if following[:2] == "'s" and (len(following) == 2 or following[2].isspace()):
        return True
    start = max(text.rfind(" ", 0, i), text.rfind("\r", 0, i)) + 1
    token = text[start:i]
    if not token:
        return False
    if token.endswith("Co") and following == " KG":
        return True
    next_is_space = following[:1].isspace()
    if len(token) == 1 and "A" <= token <= "Z" and (next_is_space or (start > 0 and following[:1] == ","
                                                                      and following[1:2].isspace())):
        return True
    lowered = token.lower()
    if lowered in PREPOSITIVE:
        return next_is_space or (following[:1] == ":" and following[1:2].isdecimal())
    if lowered in NUMBER_ABBREVIATIONS:
        rest = text[i + 1:].lstrip()
        return next_is_space and (following[1:2].isdecimal() or rest[:1] == "(")
    if lowered in OTHER_ABBREVIATIONS or DOTTED_ABBREVIATION.fullmatch(lowered):
        return AFTER_OTHER_ABBREVIATION.match(text, i + 1) is not None
    return False


def protect_abbreviations(text: str) -> str:
    """pysbd's `AbbreviationReplacer.replace`: the period of an abbreviation or an initial ends no
    sentence, unless the abbreviation is followed by a usual sentence starter ("... the U.S. The ...")."""
    protected = [m.start() for m in ANY_PERIOD.finditer(text) if _ends_no_sentence(text, m.start())]
    if protected:
        pieces, last = [], 0
        for i in protected:
            pieces += (text[last:i], PERIOD)
            last = i + 1
        text = "".join(pieces) + text[last:]
    if MULTI_PERIOD_HINT.search(text):
        text = MULTI_PERIOD_ABBREVIATION.sub(lambda m: m.group().replace(".", PERIOD), text)
    if PERIOD in text:
        for pattern, hint in AM_PM:
            if hint in text:
                text = pattern.sub(".", text)
        if any(c + PERIOD in text for c in "SAKUIvV"):
            text = ABBREVIATION_BEFORE_STARTER.sub(r"\1.", text)
    return text


def protect_numbers(text: str) -> str:
    """pysbd's number rules: the period of "3.5", "No. 3" and "2." at a line's start ends no sentence."""
    if DIGIT_PERIOD.search(text) or PERIOD_BEFORE_DIGIT.search(text):
        text = DIGIT_PERIOD_NOT_SPACE.sub(PERIOD, PERIOD_BEFORE_DIGIT.sub(PERIOD, text))
        if "\r" in text or text[:1].isdecimal():
            for pattern in LINE_START_NUMBER:
                text = pattern.sub(PERIOD, text)
    return text


def _in_sequence(items: list[int], index: int) -> bool:
    item = items[index]
    if index < len(items) - 1 and item + 1 == items[index + 1]:
        return True
    if index == 0:
        return False
    previous = items[index - 1]
    return item - 1 == previous or (item == 0 and previous == 9) or (item == 9 and previous == 0)


def _mark_numbers(text: str, find: re.Pattern, mark: re.Pattern, marker: str, strip: bool) -> str:
    items = [int(x) for x in find.findall(text)]
    for index, item in enumerate(items):
        if _in_sequence(items, index):
            def replace(match, item=item):
                found = match.group().strip() if strip else match.group()
                chomped = found if len(found) == 1 else found.strip(".])")
                return f"{item}{marker}" if chomped == str(item) else found
            text = mark.sub(replace, text)
    return text


def _mark_letters(text: str, find: re.Pattern, parens: bool, alphabet: list[str]) -> str:
    items = [x for x in find.findall(text) if x in alphabet]
    for index, letter in enumerate(items):
        # items[index - 1] wraps round to the last item for the first, as in pysbd.
        position, previous = alphabet.index(letter), alphabet.index(items[index - 1])
        if index == len(items) - 1:
            if abs(previous - position) != 1:
                continue
        elif alphabet.index(items[index + 1]) - position != 1 and abs(previous - position) != 1:
            continue
        if parens:
            def replace(match, letter=letter):
                found = match.group()
                if "(" in found:
                    return f"\r{LEFT_PAREN}{letter}" if found.strip("(") == letter else found
                return f"\r{found}" if found == letter else found
            text = LETTERS_AND_PAREN.sub(replace, text)
        else:
            text = LETTER_AND_PERIOD.sub(
                lambda m, letter=letter: f"\r{letter}{PERIOD}" if m.group().strip(".") == letter else m.group(), text)
    return text


def _letter_items_before_parens(text: str) -> int:
    """How many "a)", "(b)", "iv)" items `text` has (a list needs two, so most texts need no scan)."""
    count, j = 0, text.find(")")
    while j >= 0:
        k = j
        while k > 0 and "a" <= text[k - 1] <= "z":
            k -= 1
        word = text[k:j]
        if word and (k == 0 or text[k - 1] in " (\r") and (len(word) == 1 or word in ROMAN_NUMERALS):
            count += 1
        j = text.find(")", j + 1)
    return count


def mark_list_items(text: str) -> str:
    """pysbd's `ListItemReplacer.add_line_break`: a line break before each item of a list, and the
    period after an item's number or letter protected. `text` has single spaces between words.
    Each scan runs only where two items of its kind could be found: one item makes no list."""
    letters_before_periods = len(LETTER_LIST_HINT.findall(text)) + (LETTER_BEFORE_PERIOD.match(text) is not None)
    for alphabet in (LATIN_LETTERS, ROMAN_NUMERALS):
        if letters_before_periods >= 2:
            text = _mark_letters(text, LETTER_BEFORE_PERIOD, False, alphabet)
        if ")" in text and _letter_items_before_parens(text) >= 2:
            text = _mark_letters(text, LETTERS_BEFORE_PAREN, True, alphabet)
    if len(NUMBER_ITEM_HINT.findall(text)) >= 2:
        text = _mark_numbers(text, NUMBER_BEFORE_PERIOD, NUMBER_AND_PERIOD, LIST_PERIOD, strip=True)
        if LIST_PERIOD in text and not NUMBERED_ACROSS_LINES.search(text) and not FOR_NUMBER.search(text):
            for pattern in BREAK_BEFORE_NUMBERED:
                text = pattern.sub("\r", text)
        text = text.replace(LIST_PERIOD, PERIOD)
    if ")" in text and len(DIGIT_PAREN.findall(text)) >= 2:
        for _ in range(2):  # pysbd runs this scan twice
            text = _mark_numbers(text, NUMBER_BEFORE_PAREN, NUMBER_BEFORE_PAREN, LIST_PAREN, strip=False)
        if LIST_PAREN in text and not PAREN_NUMBERED_ACROSS_LINES.search(text):
            text = BREAK_BEFORE_PAREN_NUMBERED.sub("\r", text)
        text = text.replace(LIST_PAREN, "")
    return text
