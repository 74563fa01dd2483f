"""The grammar: a PCFG file read with ``nltk.grammar.PCFG`` and compiled into sampling tables.

nltk checks the text and the probabilities; this module gives each nonterminal its role:
a *production* (one of the four node-forming names), a *choice* (every alternative is one
nonterminal: ``network``, ``module``) or a *category* (every alternative is one registered
terminal).
It also computes, by fixed point, the least depth and the fewest nodes each symbol can derive, which
is how the sampler terminates without timeouts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import nltk
from nltk.grammar import Nonterminal, ProbabilisticProduction

from einspace.blocks.registry import Kind, UnknownTerminalError, get
from einspace.blocks.registry import terminals as registered

from .errors import GrammarError
from .productions import MODULE, is_production, production
from .productions import names as production_names

DEFAULT_GRAMMAR = "einspace"


@dataclass(frozen=True)
class Option:
    """One flattened way to expand a production: the alternative's symbols, the terminal chosen
    for its first symbol (if that is a category) and the probability of both together."""

    rhs: tuple[str, ...]
    terminal: str | None
    weight: float


@dataclass
class Grammar:
    """A validated PCFG with the tables the sampler and mutation read."""

    pcfg: nltk.PCFG
    source: str
    start: str = ""
    module: str = ""
    choices: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    categories: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    category_kind: dict[str, Kind] = field(default_factory=dict)
    options: dict[str, list[Option]] = field(default_factory=dict)
    min_depth: dict[str, float] = field(default_factory=dict)
    min_nodes: dict[str, float] = field(default_factory=dict)

    def min_nodes_of(self, option: Option) -> float:
        """Fewest nodes a flattened production option can derive, itself included."""
        return 1 + sum(self.min_nodes[s] for s in option.rhs)

    def terminals_of(self, kind: Kind) -> list[tuple[str, float]]:
        """Every terminal of ``kind`` the grammar can produce, with its summed category weight."""
        weights: dict[str, float] = {}
        for category, members in self.categories.items():
            if self.category_kind.get(category) == kind:
                for name, p in members:
                    weights[name] = weights.get(name, 0.0) + p
        return list(weights.items())

    def to_text(self) -> str:
        """The grammar in nltk's PCFG text format (readable back with ``load_grammar``)."""
        by_lhs: dict[str, list[str]] = {}
        for prod in self.pcfg.productions():
            rhs = " ".join(f"'{s}'" if isinstance(s, str) else str(s) for s in prod.rhs())
            by_lhs.setdefault(str(prod.lhs()), []).append(f"{rhs} [{prod.prob():.6g}]")
        return "\n".join(f"{lhs} -> {' | '.join(alts)}" for lhs, alts in by_lhs.items()) + "\n"


def load_grammar(path: str | Path | None = None, *, terminal_set: str | list[str] = "einspace",
                 family_weights: dict[str, float] | None = None,
                 probabilities: dict | None = None, disable: list[str] | None = None,
                 add: dict[str, list[str]] | None = None) -> Grammar:
    """Read a grammar file (the shipped einspace grammar by default) and apply overrides.

    ``terminal_set`` is ``"einspace"`` (the file's terminals: the reference's lists),
    ``"seed-papers"`` (those plus every paper primitive, each added to the category its terminal
    names) or an explicit list of terminal names (only those).  ``family_weights`` multiplies the
    weight of every terminal of a family (``einspace terminals`` lists the families).
    ``probabilities`` maps a nonterminal to {alternative: probability}; unnamed alternatives
    share what is left in proportion to their old weights.  ``disable`` removes terminals
    everywhere; ``add`` appends registered terminals to categories.
    """
    if path is None:
        text = resources.files("einspace").joinpath(f"grammars/{DEFAULT_GRAMMAR}.pcfg").read_text()
        source = f"<builtin {DEFAULT_GRAMMAR}>"
    else:
        file = Path(path)
        if not file.is_file():
            raise GrammarError(f"grammar file {str(file)!r} does not exist")
        try:
            text, source = file.read_text(encoding="utf-8"), str(file)
        except (OSError, UnicodeDecodeError) as e:
            raise GrammarError(f"grammar file {str(file)!r} cannot be read as text ({e})") \
                from None
    try:
        pcfg = nltk.PCFG.fromstring(text)
    except ValueError as e:
        raise GrammarError(f"{source}: {str(e).splitlines()[0]}") from None
    add = {category: list(names) for category, names in (add or {}).items()}
    disable = list(disable or [])
    if terminal_set != "einspace":
        _apply_terminal_set(pcfg, terminal_set, add, disable)
    if probabilities or disable or add or family_weights:
        pcfg = _override(pcfg, source, probabilities or {}, disable, add, family_weights or {})
    return compile_grammar(pcfg, source)


def _apply_terminal_set(pcfg: nltk.PCFG, terminal_set, add: dict, disable: list) -> None:
    """Turn a terminal set into additions and removals of terminals."""
    present = {s for prod in pcfg.productions() for s in prod.rhs() if isinstance(s, str)}
    if terminal_set == "seed-papers":
        wanted = [t for t in registered() if t.family != "einspace" and t.category]
    elif isinstance(terminal_set, (list, tuple)):
        names = set(terminal_set)
        known = {t.name for t in registered()}
        unknown = sorted(names - known)
        if unknown:
            raise GrammarError(f"terminal_set: unknown terminals {', '.join(unknown)}")
        disable += sorted(present - names)
        wanted = [t for t in registered() if t.name in names and t.name not in present]
        missing = sorted({t.name for t in wanted if not t.category} - present)
        if missing:
            raise GrammarError(f"terminal_set: {', '.join(missing)} name no grammar category; "
                               f"add them with grammar.add instead")
    else:
        raise GrammarError(f"terminal_set must be 'einspace', 'seed-papers' or a list of "
                           f"terminal names, got {terminal_set!r}")
    for t in wanted:
        names = add.setdefault(t.category, [])
        if t.name not in names:
            names.append(t.name)


def _override(pcfg: nltk.PCFG, source: str, probabilities: dict, disable: list[str],
              add: dict[str, list[str]], family_weights: dict[str, float]) -> nltk.PCFG:
    rules: dict[str, list[list]] = {}
    for prod in pcfg.productions():
        rules.setdefault(str(prod.lhs()), []).append([prod.rhs(), prod.prob()])
    for category, names in add.items():
        if category not in rules:
            raise GrammarError(f"add: {category!r} is not a nonterminal of {source}")
        mean = sum(p for _, p in rules[category]) / len(rules[category])
        present = {a[0] for a in rules[category]}
        rules[category] += [[(str(n),), mean] for n in names if (str(n),) not in present]
        _normalise(rules[category])
    if family_weights:
        _weigh_families(rules, family_weights)
    for name in disable:
        found = False
        for alternatives in rules.values():
            kept = [a for a in alternatives if a[0] != (name,)]
            found |= len(kept) != len(alternatives)
            alternatives[:] = kept
        if not found:
            raise GrammarError(f"disable: {name!r} is not a terminal of {source}")
    _prune_empty(rules, str(pcfg.start()))
    for lhs, overrides in probabilities.items():
        _set_probabilities(rules, lhs, overrides, source)
    productions = [ProbabilisticProduction(Nonterminal(lhs), rhs, prob=p)
                   for lhs, alts in rules.items() for rhs, p in alts]
    try:
        return nltk.PCFG(pcfg.start(), productions)
    except ValueError as e:
        raise GrammarError(f"overrides of {source}: {str(e).splitlines()[0]}") from None


def _weigh_families(rules: dict[str, list[list]], family_weights: dict[str, float]) -> None:
    families = {t.name: t.family for t in registered()}
    unknown = sorted(set(family_weights) - set(families.values()))
    if unknown:
        raise GrammarError(f"family_weights: unknown families {', '.join(unknown)} (known: "
                           f"{', '.join(sorted(set(families.values())))})")
    for name, weight in family_weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not math.isfinite(weight) or weight < 0:
            raise GrammarError(f"family_weights.{name}: {weight!r} is not a number >= 0")
    for alternatives in rules.values():
        if all(len(rhs) == 1 and isinstance(rhs[0], str) for rhs, _ in alternatives):
            for a in alternatives:
                a[1] *= family_weights.get(families.get(a[0][0], ""), 1.0)
            alternatives[:] = [a for a in alternatives if a[1] > 0]
            if alternatives:
                _normalise(alternatives)


def _normalise(alternatives: list[list]) -> None:
    total = sum(p for _, p in alternatives)
    for a in alternatives:
        a[1] /= total


def _prune_empty(rules: dict[str, list[list]], start: str) -> None:
    """Drop alternatives that use a nonterminal left without alternatives, until none remain."""
    changed = True
    while changed:
        changed = False
        empty = {lhs for lhs, alts in rules.items() if not alts}
        for lhs in empty:
            del rules[lhs]
            changed = True
        for alternatives in rules.values():
            kept = [a for a in alternatives
                    if not any(isinstance(s, Nonterminal) and str(s) in empty for s in a[0])]
            if len(kept) != len(alternatives):
                alternatives[:] = kept
                changed = True
            if alternatives:
                _normalise(alternatives)
    if start not in rules:
        raise GrammarError("every alternative of the start symbol was disabled")
    used = {str(s) for alts in rules.values() for rhs, _ in alts for s in rhs
            if isinstance(s, Nonterminal)}
    for lhs in [lhs for lhs in rules if lhs not in used and lhs != start]:
        del rules[lhs]


def _set_probabilities(rules: dict[str, list[list]], lhs: str, overrides: dict,
                       source: str) -> None:
    if lhs not in rules:
        raise GrammarError(f"probabilities: {lhs!r} is not a nonterminal of {source} "
                           f"(known: {', '.join(sorted(rules))})")
    alternatives = rules[lhs]
    keyed = {" ".join(str(s) for s in rhs): alt for alt in alternatives for rhs in [alt[0]]}
    for key, value in overrides.items():
        if key not in keyed:
            raise GrammarError(f"probabilities.{lhs}: {key!r} is not an alternative "
                               f"(alternatives: {', '.join(keyed)})")
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise GrammarError(f"probabilities.{lhs}.{key}: {value!r} is not a number in [0, 1]")
    fixed = sum(overrides.values())
    if fixed > 1 + 1e-9:
        raise GrammarError(f"probabilities.{lhs}: the given values sum to {fixed:g} > 1")
    free = [a for k, a in keyed.items() if k not in overrides]
    free_mass = sum(a[1] for a in free)
    for key, value in overrides.items():
        keyed[key][1] = float(value)
    for a in free:
        a[1] = (1 - fixed) * (a[1] / free_mass if free_mass else 1 / len(free))
    alternatives[:] = [a for a in alternatives if a[1] > 0]
    if not alternatives or (not free and abs(fixed - 1) > 1e-6):
        raise GrammarError(f"probabilities.{lhs}: the values must sum to 1, got {fixed:g}")


def compile_grammar(pcfg: nltk.PCFG, source: str) -> Grammar:
    """Classify every nonterminal, check terminals against the registry, build sampling tables."""
    grammar = Grammar(pcfg=pcfg, source=source, start=str(pcfg.start()))
    rules: dict[str, list[tuple[tuple, float]]] = {}
    for prod in pcfg.productions():
        rules.setdefault(str(prod.lhs()), []).append((prod.rhs(), prod.prob()))

    def is_nt(s) -> bool:
        return isinstance(s, Nonterminal)

    for lhs, alts in rules.items():
        if is_production(lhs):
            continue
        if all(len(rhs) == 1 and is_nt(rhs[0]) for rhs, _ in alts):
            grammar.choices[lhs] = [(str(rhs[0]), p) for rhs, p in alts]
        elif all(len(rhs) == 1 and not is_nt(rhs[0]) for rhs, _ in alts):
            grammar.categories[lhs] = [(rhs[0], p) for rhs, p in alts]
        else:
            raise GrammarError(f"{source}: {lhs!r} mixes terminals and nonterminals; a "
                               f"nonterminal must be a production "
                               f"({', '.join(production_names())}), a choice of single "
                               f"nonterminals, or a category of single terminals")
    for symbol, targets in grammar.choices.items():
        for target, _ in targets:
            if target not in rules:
                raise GrammarError(f"{source}: {symbol!r} refers to {target!r}, which has no rule")
            if target in grammar.categories:
                raise GrammarError(f"{source}: {symbol!r} chooses the terminal category "
                                   f"{target!r}; wrap terminals in a production")
    if grammar.start not in grammar.choices:
        raise GrammarError(f"{source}: the start symbol {grammar.start!r} must be a choice of "
                           f"productions")
    modules: set[str] = set()
    for label in production_names():
        for rhs, p in rules.get(label, []):
            symbols = tuple(str(s) for s in rhs)
            _check_alternative(grammar, label, symbols, source)
            modules.update(s for s in symbols if s in grammar.choices)
            grammar.options.setdefault(label, []).extend(_flatten(grammar, symbols, p))
    if len(modules) != 1:
        raise GrammarError(f"{source}: every inner module slot must use one choice symbol, "
                           f"found {sorted(modules) or 'none'}")
    grammar.module = modules.pop()
    _minimum_sizes(grammar, rules)
    return grammar


def _check_alternative(grammar: Grammar, label: str, symbols: tuple[str, ...], source: str):
    def fail(why: str):
        raise GrammarError(f"{source}: {label} -> {' '.join(symbols)}: {why}")

    def category(symbol: str, kind: Kind) -> None:
        if symbol not in grammar.categories:
            fail(f"{symbol!r} must be a category of {kind.value} terminals")
        previous = grammar.category_kind.setdefault(symbol, kind)
        if previous != kind:
            fail(f"{symbol!r} is used both as {previous.value} and {kind.value} category")
        for name, _ in grammar.categories[symbol]:
            try:
                get(kind, name)
            except UnknownTerminalError as e:
                fail(str(e))

    def module(symbol: str) -> None:
        if symbol not in grammar.choices:
            fail(f"{symbol!r} must be a choice of productions (a module slot)")

    rule = production(label)
    if not symbols:
        fail(f"{label} needs at least one symbol")
    if rule.arity_from_head:
        category(symbols[0], rule.first)
        heads = [name for name, _ in grammar.categories[symbols[0]]]
    else:
        heads = [None]
    for head in heads:
        slots = rule.slots(head)
        if len(slots) != len(symbols):
            whose = f"with {rule.first.value} terminal {head!r} " if head else ""
            fail(f"{label} {whose}takes {_in_words(len(slots))} symbols "
                 f"({', '.join(_slot_name(s) for s in slots)}), this alternative has "
                 f"{len(symbols)}")
        for symbol, slot in zip(symbols, slots, strict=True):
            if slot == MODULE:
                module(symbol)
            else:
                category(symbol, slot)


def _slot_name(slot) -> str:
    return "a module" if slot == MODULE else f"a {slot.value} category"


def _in_words(n: int) -> str:
    """Small counts spelled out, as a person writing the message would."""
    words = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    return words[n] if n < len(words) else str(n)


def _flatten(grammar: Grammar, symbols: tuple[str, ...], p: float) -> list[Option]:
    head = symbols[0]
    if head in grammar.categories:
        return [Option(symbols, name, p * q) for name, q in grammar.categories[head]]
    return [Option(symbols, None, p)]


def _minimum_sizes(grammar: Grammar, rules: dict) -> None:
    """Least depth (production nodes) and fewest nodes (leaves included) of each symbol."""
    depth = {s: math.inf for s in rules}
    nodes = {s: math.inf for s in rules}
    for category in grammar.categories:
        depth[category], nodes[category] = 0, 1
    changed = True
    while changed:
        changed = False
        for symbol, alts in rules.items():
            if symbol in grammar.categories:
                continue
            own = 1 if is_production(symbol) else 0
            best_d = min(own + max((depth[str(s)] for s in rhs), default=0) for rhs, _ in alts)
            best_n = min(own + sum(nodes[str(s)] for s in rhs) for rhs, _ in alts)
            if best_d < depth[symbol] or best_n < nodes[symbol]:
                depth[symbol], nodes[symbol] = best_d, best_n
                changed = True
    unproductive = [s for s, d in depth.items() if d == math.inf]
    if unproductive:
        raise GrammarError(f"{grammar.source}: {', '.join(unproductive)} can never finish "
                           f"(no alternative ends in terminals)")
    grammar.min_depth, grammar.min_nodes = depth, nodes
