#include "daemon/catalog/solver.h"

#include <algorithm>
#include <cassert>
#include <map>

namespace imaged::catalog {
namespace {

// "glibc>=2.40" for the atom "!glibc>=2.40".
std::string conflictTarget(const Atom& atom) {
  Atom positive = atom;
  positive.conflict = false;
  return positive.str();
}

}  // namespace

Solver::Solver(const Catalog& catalog, size_t maxConflicts)
    : catalog_(catalog),
      maxConflicts_(maxConflicts),
      values_(catalog.packageCount(), 0),
      levels_(catalog.packageCount(), 0),
      reasons_(catalog.packageCount()),
      expanded_(catalog.packageCount(), 0),
      seen_(catalog.packageCount(), 0),
      watches_(catalog.packageCount() * 2),
      firstDemand_(catalog.packageCount(), UINT32_MAX) {}

void Solver::addFact(PackageId id, bool pinned) {
  facts_.push_back(id);
  if (!pinned) {
    if (tried_.empty()) tried_.assign(values_.size(), 0);
    tried_[id] = 1;
  }
}

void Solver::addRequest(const Atom& atom, std::vector<PackageId> candidates) {
  Clause c{{}, ClauseKind::kRequest, 0, &atom};
  for (PackageId id : candidates) c.lits.push_back(pos(id));
  const uint32_t index = attach(std::move(c));
  demands_.push_back({index, false, 0, std::move(candidates)});
}

uint32_t Solver::attach(Clause clause) {
  const auto index = static_cast<uint32_t>(clauses_.size());
  if (!clause.lits.empty()) watches_[clause.lits[0]].push_back(index);
  if (clause.lits.size() > 1) watches_[clause.lits[1]].push_back(index);
  clauses_.push_back(std::move(clause));
  return index;
}

void Solver::assign(Lit l, Reason reason) {
  const PackageId v = var(l);
  values_[v] = negated(l) ? -1 : 1;
  levels_[v] = level();
  reasons_[v] = reason;
  trail_.push_back(l);
}

const std::vector<PackageId>& Solver::candidatesOf(const Atom& atom) {
  auto it = candidateCache_.find(&atom);
  if (it == candidateCache_.end())
    it = candidateCache_.emplace(&atom, catalog_.candidates(atom)).first;
  return it->second;
}

// Adds a clause while the search is under way: watches two literals that are not false if it
// can, and otherwise reports the clause as unit (assigning its last open literal) or conflicting.
Solver::Conflict Solver::addClauseDuringSearch(Clause clause) {
  std::vector<Lit>& lits = clause.lits;
  // Open or true literals first; then false ones, the most recently assigned first.
  std::stable_sort(lits.begin(), lits.end(), [&](Lit a, Lit b) {
    const bool fa = value(a) == -1, fb = value(b) == -1;
    if (fa != fb) return !fa;
    return fa && levels_[var(a)] > levels_[var(b)];
  });
  const bool satisfied =
      std::any_of(lits.begin(), lits.end(), [&](Lit l) { return value(l) == 1; });
  const bool firstOpen = !lits.empty() && value(lits[0]) == 0;
  const bool secondFalse = lits.size() < 2 || value(lits[1]) == -1;
  const uint32_t index = attach(std::move(clause));
  Conflict none;
  if (satisfied) return none;
  const std::vector<Lit>& attached = clauses_[index].lits;
  if (attached.empty() || value(attached[0]) == -1) {
    Conflict c;
    c.none = false;
    c.lits = attached;
    c.clause = index;
    return c;
  }
  if (firstOpen && secondFalse) assign(attached[0], {ReasonKind::kClause, index});
  return none;
}

// A record has just been installed for the first time: its dependencies and conflicts become
// clauses, and its dependencies become demands.
Solver::Conflict Solver::expand(PackageId id) {
  // Every clause is added even after one conflicts: the record is expanded only once, so a
  // clause skipped now would be missing whenever the record is installed again.
  expanded_[id] = 1;
  firstDemand_[id] = static_cast<uint32_t>(demands_.size());
  Conflict first;
  auto keep = [&](Conflict c) {
    if (first.none && !c.none) first = std::move(c);
  };
  const PackageRecord& record = catalog_.package(id);
  for (const Atom& atom : record.depends) {
    const std::vector<PackageId>& candidates = candidatesOf(atom);
    if (atom.conflict) {
      for (PackageId other : candidates) {
        if (other == id) continue;  // a record never conflicts with itself
        keep(addClauseDuringSearch({{neg(id), neg(other)}, ClauseKind::kConflicts, id, &atom}));
      }
      continue;
    }
    Clause clause{{neg(id)}, ClauseKind::kDepends, id, &atom};
    for (PackageId other : candidates) clause.lits.push_back(pos(other));
    const auto index = static_cast<uint32_t>(clauses_.size());
    demands_.push_back({index, true, id, candidates});
    keep(addClauseDuringSearch(std::move(clause)));
  }
  return first;
}

Solver::Conflict Solver::propagate() {
  while (head_ < trail_.size()) {
    const Lit l = trail_[head_++];
    if (!negated(l)) {
      const PackageId v = var(l);
      // At most one installed record per slot.
      for (std::string_view slot : catalog_.slots(v)) {
        for (PackageId u : catalog_.slotMembers(slot)) {
          if (u == v) continue;
          if (values_[u] == 1) {
            Conflict c;
            c.none = false;
            c.lits = {neg(v), neg(u)};
            c.a = v;
            c.b = u;
            return c;
          }
          if (values_[u] == 0) assign(neg(u), {ReasonKind::kSlot, v});
        }
      }
      if (!expanded_[v]) {
        Conflict c = expand(v);
        if (!c.none) return c;
      } else {
        demandCursor_ = std::min<size_t>(demandCursor_, firstDemand_[v]);
      }
    }
    // Clauses watching the literal that just became false.
    const Lit falseLit = l ^ 1u;
    std::vector<uint32_t>& watchers = watches_[falseLit];
    for (size_t i = 0; i < watchers.size();) {
      const uint32_t index = watchers[i];
      std::vector<Lit>& lits = clauses_[index].lits;
      if (lits.size() == 1) {
        Conflict c;
        c.none = false;
        c.lits = lits;
        c.clause = index;
        return c;
      }
      if (lits[0] == falseLit) std::swap(lits[0], lits[1]);
      if (value(lits[0]) == 1) {
        ++i;
        continue;
      }
      bool moved = false;
      for (size_t k = 2; k < lits.size(); ++k) {
        if (value(lits[k]) != -1) {
          std::swap(lits[1], lits[k]);
          watches_[lits[1]].push_back(index);
          watchers[i] = watchers.back();
          watchers.pop_back();
          moved = true;
          break;
        }
      }
      if (moved) continue;
      if (value(lits[0]) == -1) {
        Conflict c;
        c.none = false;
        c.lits = lits;
        c.clause = index;
        return c;
      }
      assign(lits[0], {ReasonKind::kClause, index});
      ++i;
    }
  }
  return {};
}

std::vector<Solver::Lit> Solver::reasonLits(PackageId v) const {
  const Reason& r = reasons_[v];
  switch (r.kind) {
    case ReasonKind::kClause:
      return clauses_[r.index].lits;
    case ReasonKind::kSlot:
      return {neg(r.index), neg(v)};
    default:
      return {};
  }
}

// First-UIP conflict analysis: learns a clause that is false now and, after backjumping to
// `backjumpLevel`, has exactly one open literal (learnt->front()).
void Solver::analyze(const Conflict& conflict, std::vector<Lit>* learnt, int* backjumpLevel) {
  learnt->assign(1, 0);
  int pathCount = 0;
  Lit p = 0;
  bool haveP = false;
  size_t index = trail_.size();
  std::vector<Lit> lits = conflict.lits;
  for (;;) {
    for (Lit q : lits) {
      if (haveP && q == p) continue;
      const PackageId v = var(q);
      if (seen_[v] || levels_[v] == 0) continue;
      seen_[v] = 1;
      if (levels_[v] >= level()) {
        ++pathCount;
      } else {
        learnt->push_back(q);
      }
    }
    assert(pathCount > 0);  // every conflict has a literal of the current level
    while (!seen_[var(trail_[--index])]) {
    }
    p = trail_[index];
    haveP = true;
    seen_[var(p)] = 0;
    if (--pathCount == 0) break;
    lits = reasonLits(var(p));
  }
  (*learnt)[0] = p ^ 1u;
  *backjumpLevel = 0;
  size_t maxAt = 1;
  for (size_t i = 1; i < learnt->size(); ++i) {
    seen_[var((*learnt)[i])] = 0;
    if (levels_[var((*learnt)[i])] > *backjumpLevel) {
      *backjumpLevel = levels_[var((*learnt)[i])];
      maxAt = i;
    }
  }
  if (learnt->size() > 1) std::swap((*learnt)[1], (*learnt)[maxAt]);
}

void Solver::backtrack(int toLevel) {
  if (level() <= toLevel) return;
  const size_t start = levelStart_[static_cast<size_t>(toLevel)];
  for (size_t i = trail_.size(); i > start; --i) values_[var(trail_[i - 1])] = 0;
  trail_.resize(start);
  levelStart_.resize(static_cast<size_t>(toLevel));
  head_ = trail_.size();
  demandCursor_ = 0;
}

bool Solver::pickDecision(PackageId* decision) {
  for (; demandCursor_ < demands_.size(); ++demandCursor_) {
    const Demand& d = demands_[demandCursor_];
    if (d.hasOwner && values_[d.owner] != 1) continue;
    bool satisfied = false;
    const PackageId* open = nullptr;
    for (const PackageId& c : d.candidates) {
      if (values_[c] == 1) {
        satisfied = true;
        break;
      }
      if (values_[c] == 0 && !open) open = &c;
    }
    if (satisfied || !open) continue;  // an unsatisfiable demand is propagation's to report
    *decision = *open;
    return true;
  }
  return false;
}

Solver::Outcome Solver::solve() {
  Conflict c;
  for (PackageId f : facts_) {
    const uint32_t index = attach({{pos(f)}, ClauseKind::kRequest, f, nullptr});
    if (values_[f] == 1) continue;
    if (values_[f] == -1) {
      c.none = false;
      c.lits = {pos(f)};
      c.clause = index;
      break;
    }
    assign(pos(f), {ReasonKind::kFact, index});
    c = propagate();
    if (!c.none) break;
  }
  if (c.none) c = propagate();
  if (!c.none) {
    final_ = c;
    failedAtStart_ = true;
    return Outcome::kUnsatisfiable;
  }
  size_t conflicts = 0;
  std::vector<Lit> learnt;
  for (;;) {
    if (!c.none) {
      if (level() == 0) {
        final_ = c;
        return Outcome::kUnsatisfiable;
      }
      if (++conflicts > maxConflicts_) return Outcome::kLimit;
      int backjump = 0;
      analyze(c, &learnt, &backjump);
      backtrack(backjump);
      const uint32_t index = attach({learnt, ClauseKind::kLearned, 0, nullptr});
      assign(learnt[0], {ReasonKind::kClause, index});
      c = propagate();
      continue;
    }
    PackageId next;
    if (!pickDecision(&next)) return Outcome::kSatisfied;
    levelStart_.push_back(trail_.size());
    assign(pos(next), {ReasonKind::kDecision, 0});
    c = propagate();
  }
}

std::vector<PackageId> Solver::installed() const {
  std::vector<PackageId> out;
  for (Lit l : trail_) {
    if (!negated(l)) out.push_back(var(l));
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string Solver::describe(PackageId v) const {
  return catalog_.label(v);
}

std::string Solver::sharedSlots(PackageId a, PackageId b) const {
  const auto slotsA = catalog_.slots(a), slotsB = catalog_.slots(b);
  std::string out;
  for (auto slot : slotsA) {
    if (std::find(slotsB.begin(), slotsB.end(), slot) == slotsB.end()) continue;
    out += (out.empty() ? "'" : ", '") + std::string(slot) + "'";
  }
  return out;
}

std::string Solver::describeStep(PackageId v) const {
  const Reason& r = reasons_[v];
  const bool installed = values_[v] == 1;
  if (r.kind == ReasonKind::kFact) {
    return describe(v) + (!tried_.empty() && tried_[v] ? " is tried" : " is pinned");
  }
  if (r.kind == ReasonKind::kSlot) {
    return describe(r.index) + " takes " + sharedSlots(r.index, v) + ", so " + describe(v) +
           " cannot";
  }
  if (r.kind != ReasonKind::kClause) return "";
  const Clause& c = clauses_[r.index];
  switch (c.kind) {
    case ClauseKind::kRequest:
      return c.atom ? describe(v) + " is the only candidate left for " + c.atom->str()
                    : describe(v) + " is pinned";
    case ClauseKind::kDepends:
      return installed ? describe(c.owner) + " requires " + c.atom->str() + ", and only " +
                             describe(v) + " is left for it"
                       : describe(c.owner) + " cannot be installed: it requires " + c.atom->str() +
                             " and no candidate is left";
    case ClauseKind::kConflicts: {
      // The clause is {¬owner, ¬other}; v is whichever of the two it ruled out.
      const PackageId other = var(c.lits[0]) == c.owner ? var(c.lits[1]) : var(c.lits[0]);
      return describe(c.owner) + " conflicts with " + conflictTarget(*c.atom) + " (" +
             describe(other) + ")";
    }
    case ClauseKind::kLearned:
      return describe(v) + (installed ? " is needed" : " is ruled out") +
             " by the alternatives already tried";
  }
  return "";
}

std::string Solver::describeConflict(const Conflict& c) const {
  if (c.clause == UINT32_MAX) {
    return describe(c.a) + " and " + describe(c.b) + " cannot both be installed: both are " +
           sharedSlots(c.a, c.b);
  }
  const Clause& clause = clauses_[c.clause];
  switch (clause.kind) {
    case ClauseKind::kRequest:
      if (!clause.atom) return describe(clause.owner) + " cannot be installed";
      return clause.lits.empty() ? "nothing provides " + clause.atom->str()
                                 : "no candidate of " + clause.atom->str() + " is left";
    case ClauseKind::kDepends:
      return clause.lits.size() == 1 ? describe(clause.owner) + " requires " + clause.atom->str() +
                                           ", which nothing provides"
                                     : describe(clause.owner) + " requires " + clause.atom->str() +
                                           ", and no candidate of it is left";
    case ClauseKind::kConflicts: {
      const PackageId other =
          var(clause.lits[0]) == clause.owner ? var(clause.lits[1]) : var(clause.lits[0]);
      return describe(clause.owner) + " conflicts with " + conflictTarget(*clause.atom) + " (" +
             describe(other) + ")";
    }
    case ClauseKind::kLearned:
      return "the remaining choices exclude one another";
  }
  return "";
}

std::vector<std::string> Solver::explain() const {
  // Every assignment that the final conflict rests on, back to the facts, in trail order.
  std::vector<uint8_t> involved(values_.size(), 0);
  std::vector<PackageId> stack;
  for (Lit l : final_.lits) stack.push_back(var(l));
  while (!stack.empty()) {
    const PackageId v = stack.back();
    stack.pop_back();
    if (involved[v] || values_[v] == 0) continue;
    involved[v] = 1;
    for (Lit l : reasonLits(v)) {
      if (var(l) != v) stack.push_back(var(l));
    }
  }
  // Records that one installed record keeps out of its slots are named in one step: "X takes
  // 'python3', so A and B cannot" rather than one step each.
  std::vector<std::string> steps;
  struct KeptOut {
    size_t step;                     // index of the taker's step
    std::vector<PackageId> records;  // kept out, in trail order
  };
  std::map<PackageId, KeptOut> keptOut;  // by taker
  for (Lit l : trail_) {
    const PackageId v = var(l);
    if (!involved[v]) continue;
    if (reasons_[v].kind == ReasonKind::kSlot) {
      auto [it, fresh] = keptOut.try_emplace(reasons_[v].index, KeptOut{steps.size(), {}});
      if (fresh) steps.emplace_back();
      it->second.records.push_back(v);
      continue;
    }
    std::string s = describeStep(v);
    if (!s.empty() && std::find(steps.begin(), steps.end(), s) == steps.end()) steps.push_back(s);
  }
  for (const auto& [taker, kept] : keptOut) {
    std::string list;
    for (size_t i = 0; i < kept.records.size(); ++i) {
      list += (i == 0                         ? ""
               : i + 1 == kept.records.size() ? " and "
                                              : ", ") +
              describe(kept.records[i]);
    }
    steps[kept.step] = describe(taker) + " takes " + sharedSlots(taker, kept.records.front()) +
                       ", so " + list + " cannot";
  }
  steps.push_back(describeConflict(final_));
  return steps;
}

}  // namespace imaged::catalog
