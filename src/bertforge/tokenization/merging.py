"""The merge loops behind the vocabulary trainers: the symbol pairs of the distinct words with
incrementally updated counts, and the two ways of picking the next merge, by frequency (BPE)
and by likelihood score (WordPiece).

Words are lists of symbol ids; a merge rewrites, in place, only the words that hold the pair
(an index maps each pair to them) and adjusts only the counts of the pairs around each
occurrence. Ties are broken towards the larger ids (left id first, then right id), see
`trainers` for why.
"""

from __future__ import annotations

import heapq
from collections import defaultdict

from bertforge.progress import progress_bar

Pair = tuple[int, int]
CONTINUATION = "##"


class SymbolPairs:
    """The adjacent symbol pairs of the distinct words: the weighted count of each pair and
    the words holding it. `where` may still list a word after the pair left it (removing it
    would cost more than skipping it at the next merge)."""

    def __init__(self, words: list[list[int]], counts: list[int]):
        self.words = words
        self.counts = counts
        self.count: dict[Pair, int] = defaultdict(int)
        self.where: dict[Pair, set[int]] = defaultdict(set)
        for wi, word in enumerate(words):
            n = counts[wi]
            for pair in zip(word, word[1:]):
                self.count[pair] += n
                self.where[pair].add(wi)

    def _decrease(self, pair: Pair, n: int) -> None:
        left = self.count[pair] - n
        if left:
            self.count[pair] = left
        else:
            del self.count[pair]
            self.where.pop(pair, None)

    def _increase(self, pair: Pair, n: int, wi: int, grown: set[Pair]) -> None:
        self.count[pair] += n
        self.where[pair].add(wi)
        grown.add(pair)

    def merge(self, pair: Pair, new_id: int) -> tuple[int, set[Pair]]:
        """Replace every occurrence of `pair` with `new_id`, left to right, in place. Returns
        how many occurrences were merged (weighted by word count) and the pairs whose count
        grew.

        Around each occurrence `x a b y` the pairs `x a` and `b y` lose one occurrence and
        `x ab`, `ab y` gain one, where `x` is the symbol now on the left (it may be an `ab`
        just made) and `y` the original right neighbour: the same bookkeeping as the
        `tokenizers` trainer, so runs like `a b a b` and `a a a` come out right."""
        a, b = pair
        self.count.pop(pair, None)
        merged = 0
        grown: set[Pair] = set()
        for wi in self.where.pop(pair, ()):
            word = self.words[wi]
            n = self.counts[wi]
            start = 0
            while True:
                try:
                    i = word.index(a, start, len(word) - 1)  # `a` with a right neighbour
                except ValueError:
                    break
                start = i + 1
                if word[i + 1] != b:
                    continue
                if i > 0:
                    left = word[i - 1]
                    if (left, a) != pair:
                        self._decrease((left, a), n)
                    self._increase((left, new_id), n, wi, grown)
                if i + 2 < len(word):
                    right = word[i + 2]
                    if (b, right) != pair:
                        self._decrease((b, right), n)
                    self._increase((new_id, right), n, wi, grown)
                word[i:i + 2] = (new_id,)
                merged += n
        return merged, grown


def add_token(vocab: list[str], index: dict[str, int], token: str) -> int:
    """The id of `token`, added at the end unless two different merges spell the same string
    (`a + bc` and `ab + c`), in which case both merges map to the one token."""
    token_id = index.get(token)
    if token_id is None:
        token_id = index[token] = len(vocab)
        vocab.append(token)
    return token_id


def learn_bpe(pairs: SymbolPairs, vocab: list[str], vocab_size: int, min_frequency: int,
              show_progress: bool) -> list[Pair]:
    """Merge the most frequent pair until the vocabulary is full; returns the merges in order.

    The heap holds (-count, -left, -right) entries pushed when a pair appears. Counts of
    existing pairs only fall (only pairs with the new symbol grow, and those are pushed
    fresh), so an entry is an upper bound: a popped entry whose count is out of date is pushed
    back with the current count, and the first up-to-date entry is the true maximum."""
    index = {token: i for i, token in enumerate(vocab)}
    heap = [(-n, -a, -b) for (a, b), n in pairs.count.items()]
    heapq.heapify(heap)
    merges: list[Pair] = []
    with progress_bar(total=vocab_size - len(vocab), desc="merges", disable=not show_progress) as bar:
        while len(vocab) < vocab_size and heap:
            neg_count, neg_a, neg_b = heapq.heappop(heap)
            pair = (-neg_a, -neg_b)
            n = pairs.count.get(pair, 0)
            if n != -neg_count:
                if n:
                    heapq.heappush(heap, (-n, neg_a, neg_b))
                continue
            if n < min_frequency:
                break
            size = len(vocab)
            new_id = add_token(vocab, index, vocab[pair[0]] + vocab[pair[1]])
            merges.append(pair)
            for a, b in pairs.merge(pair, new_id)[1]:
                n = pairs.count.get((a, b))
                if n:
                    heapq.heappush(heap, (-n, -a, -b))
            bar.update(len(vocab) - size)
    return merges


# A symbol in at most this many pairs (as the side that is not the pair's group, see below)
# keeps an exact floor; a more frequent partner gets a floor ~1/32 (3%) below its count, so its
# pairs are pushed again once per 3% it loses rather than at every merge.
EXACT_UP_TO_PAIRS = 64
FLOOR_SLACK = 32


class LikelihoodQueue:
    """The pairs by WordPiece score count(ab) / (count(a) · count(b)), for repeated arg-max.

    A merge lowers count(a) and count(b), which *raises* the score of every other pair with
    `a` or `b`; frequent symbols (`##e`) are in thousands of pairs, often with tied scores
    (every `x` always followed by `##e` scores 1/count(##e)). Re-scoring them all after each
    merge would make training quadratic, so:

    * each pair is filed under one of its symbols, its *group*: the older one (smaller id; a
      `##` symbol sorts before letters). Merges create pairs of a new symbol with older ones,
      so the symbols that keep gaining pairs (`##e`, `##s`, `th`) are the groups. A group has
      its own heap keyed by count(ab) / floor(other), and the global heap holds, per group, its
      top divided by the group symbol's exact count. A change in a group symbol's count is then
      one push, however many pairs the group has;
    * `floor(x)` is a number at most count(x), so count(ab) / (floor(other) · count(group))
      bounds the score; the pairs where `x` is the other side are pushed again only when
      count(x) drops below its floor, which is then set anew (see `EXACT_UP_TO_PAIRS`).

    Entries of both heaps are upper bounds, dropped or re-pushed when found out of date (as in
    `learn_bpe`). `pop_best` takes groups' top pairs off the global heap, computing their true
    scores, until the best (score, left id, right id) so far beats the next bound: that pair is
    the exact maximum. Divisions are of Python ints, correctly rounded, so equal ratios give
    equal floats and ties are decided by the ids."""

    def __init__(self, count: dict[Pair, int], symbol_count: list[int], min_count: int):
        self.count = count
        self.symbol_count = symbol_count
        self.floor = list(symbol_count)
        self.min_count = min_count
        self.as_other: dict[int, set[Pair]] = defaultdict(set)
        self._rebuild()

    def add(self, pair: Pair) -> None:
        """Enter a pair first seen now."""
        self.as_other[max(pair)].add(pair)
        self.push(pair)

    def _rebuild(self) -> None:
        """Both heaps from the live pairs alone (also how dead entries are cleared out)."""
        self.local: dict[int, list[tuple[float, int, int]]] = defaultdict(list)
        self.as_other.clear()
        for pair, n in self.count.items():
            other = max(pair)
            self.as_other[other].add(pair)
            if n >= self.min_count:
                self.local[min(pair)].append((-n / self.floor[other], -pair[0], -pair[1]))
        self.heap: list[tuple[float, int, int, int]] = []
        self.entries = len(self.count)  # entries pushed since, live or not: when to rebuild
        for group, entries in self.local.items():
            heapq.heapify(entries)
            self._push_top(group)

    def _current(self, entry: tuple[float, int, int]) -> float | None:
        """The up-to-date local key of the pair of a local entry (None: not eligible)."""
        a, b = -entry[1], -entry[2]
        n = self.count.get((a, b), 0)
        if n < self.min_count:
            return None
        return n / self.floor[max(a, b)]

    def _clean_top(self, group: int) -> None:
        """Pop out-of-date entries off the group's heap until its top is current."""
        local = self.local.get(group)
        while local:
            entry = local[0]
            key = self._current(entry)
            if key == -entry[0]:
                return
            heapq.heappop(local)
            if key is not None and key < -entry[0]:
                heapq.heappush(local, (-key, entry[1], entry[2]))
            # (a key that rose has a newer entry of its own further down)

    def _push_top(self, group: int) -> None:
        """Push the global entry of the group's (current) top pair."""
        self._clean_top(group)
        local = self.local.get(group)
        if local:
            a, b = -local[0][1], -local[0][2]
            bound = self.count[a, b] / (self.floor[max(a, b)] * self.symbol_count[group])
            heapq.heappush(self.heap, (-bound, local[0][1], local[0][2], group))
            self.entries += 1

    def push(self, pair: Pair) -> None:
        """(Re-)enter a pair whose count grew, whose other side's floor fell, or that was taken
        out as a candidate."""
        n = self.count.get(pair, 0)
        if n < self.min_count:
            return
        group = min(pair)
        local = self.local[group]
        entry = (-n / self.floor[max(pair)], -pair[0], -pair[1])
        heapq.heappush(local, entry)
        self.entries += 1
        if local[0] == entry:
            self._push_top(group)

    def decreased(self, symbol: int) -> None:
        """`symbol`'s count fell: its group's bound rises (one push); past its floor, the pairs
        where it is the other side are pushed again under a new floor."""
        n = self.symbol_count[symbol]
        if not n:
            self.local.pop(symbol, None)
            self.floor[symbol] = 0
            return
        self._push_top(symbol)
        if n < self.floor[symbol]:
            live = self.as_other[symbol] = {pair for pair in self.as_other[symbol] if pair in self.count}
            self.floor[symbol] = n if len(live) <= EXACT_UP_TO_PAIRS else n - n // FLOOR_SLACK
            for pair in live:
                self.push(pair)
        if self.entries > 4 * len(self.count) + 100_000:
            self._rebuild()

    def appeared(self, symbol: int) -> None:
        """A merge produced `symbol`: a new one starts with its count as floor (as does one
        brought back after it had gone); a living one only grew, which bounds still cover."""
        if not self.floor[symbol]:
            self.floor[symbol] = self.symbol_count[symbol]

    def pop_best(self) -> Pair | None:
        """The pair with the highest (score, left id, right id), taken out; None when no pair
        is eligible. Other pairs examined on the way are put back."""
        best = None  # (score, a, b)
        examined = []
        heap = self.heap
        while heap and (best is None or best < (-heap[0][0], -heap[0][1], -heap[0][2])):
            neg_bound, neg_a, neg_b, group = heapq.heappop(heap)
            self._clean_top(group)
            local = self.local.get(group)
            if not local:
                continue
            a, b = -local[0][1], -local[0][2]
            n = self.count[a, b]
            bound = n / (self.floor[max(a, b)] * self.symbol_count[group])
            if (bound, a, b) != (-neg_bound, -neg_a, -neg_b):
                if (bound, a, b) < (-neg_bound, -neg_a, -neg_b):
                    heapq.heappush(heap, (-bound, -a, -b, group))
                continue  # otherwise a newer entry for this group is still in the heap
            heapq.heappop(local)
            examined.append((a, b))
            self._push_top(group)
            score = (n / (self.symbol_count[a] * self.symbol_count[b]), a, b)
            if best is None or score > best:
                best = score
        for pair in examined:
            if best is None or pair != best[1:]:
                self.push(pair)
        return None if best is None else best[1:]


def learn_wordpiece(pairs: SymbolPairs, vocab: list[str], vocab_size: int, min_frequency: int,
                    show_progress: bool) -> None:
    """Merge the pair with the highest count(ab) / (count(a) · count(b)) until the vocabulary
    is full (new tokens are appended to `vocab`; `a + ##b` spells `ab`)."""
    index = {token: i for i, token in enumerate(vocab)}
    symbol_count = [0] * vocab_size
    for word, n in zip(pairs.words, pairs.counts):
        for symbol in word:
            symbol_count[symbol] += n
    queue = LikelihoodQueue(pairs.count, symbol_count, max(min_frequency, 1))
    with progress_bar(total=vocab_size - len(vocab), desc="merges", disable=not show_progress) as bar:
        while len(vocab) < vocab_size:
            pair = queue.pop_best()
            if pair is None:
                break
            a, b = pair
            size = len(vocab)
            new_id = add_token(vocab, index, vocab[a] + vocab[b][len(CONTINUATION):])
            merged, grown = pairs.merge(pair, new_id)
            symbol_count[a] -= merged
            symbol_count[b] -= merged
            symbol_count[new_id] += merged
            queue.appeared(new_id)
            for pair in grown:
                queue.add(pair)
            for symbol in {a, b}:
                queue.decreased(symbol)
            bar.update(len(vocab) - size)
