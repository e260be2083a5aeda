// The package solver behind resolveLine(): a conflict-driven clause-learning (CDCL) search over
// "is this record installed", written for apk's rules rather than borrowed from libsolv.
//
// Why not libsolv: Debian's libsolv is built for Debian's version order, and apk's (leading-zero
// parts compared as text, `_rc < (none) < _p`, the fuzzy `~`) cannot be expressed in it; nor can
// "a versioned provide takes its name as a slot". Expressing them would mean replacing every
// dependency by a list of record ids and every version by a rank, at which point libsolv's own
// matching is unused and its problem reports speak of synthetic tokens instead of packages.
//
// The problem, per line:
//  - facts: the pinned records (and, for explanations, records forced on);
//  - requests: for each added atom, at least one of its candidates;
//  - an installed record's dependency: at least one of the atom's candidates is installed;
//  - an installed record's `!atom`: none of the atom's candidates is installed;
//  - at most one installed record per slot (a name, or a versioned provide).
// Dependencies are expanded lazily, when a record first becomes installed during the search, so
// that a catalog of 100,000 records costs only what the request reaches.
//
// Decisions follow preference: the first unsatisfied demand (requests in order, then dependencies
// in the order they were reached) gets its most preferred candidate that is still open. Together
// with clause learning this finds a solution whenever one exists (complete), and the same one for
// the same inputs (deterministic). Unassigned records at the end are not installed, so nothing is
// installed that no demand needed.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/catalog/catalog.h"

namespace imaged::catalog {

class Solver {
 public:
  enum class Outcome { kSatisfied, kUnsatisfiable, kLimit };

  // `catalog` must outlive the solver. `maxConflicts` bounds the search (kLimit past it).
  Solver(const Catalog& catalog, size_t maxConflicts);

  // Installs `id` as a fact: pinned by the line, or (`pinned` false) tried on purpose to see why
  // it cannot be installed. Call before solve().
  void addFact(PackageId id, bool pinned = true);
  // Requires one of `candidates` (in preference order) for `atom`. Call before solve().
  void addRequest(const Atom& atom, std::vector<PackageId> candidates);

  Outcome solve();

  // After kSatisfied: the installed records, in id order.
  std::vector<PackageId> installed() const;
  // After kUnsatisfiable: why, as the chain of steps that led to the final conflict, in the
  // order they happened ("glibc-2.40-r3 is pinned", "py3.12-flask-3.0-r0 requires python-3.12",
  // ...). Steps that only the search (not direct implication) established are summarised.
  std::vector<std::string> explain() const;
  // After kUnsatisfiable: true when the facts and requests conflict by implication alone,
  // without needing to search (so explain() names every step).
  bool failedWithoutSearch() const { return failedAtStart_; }

 private:
  using Lit = uint32_t;  // var * 2 + (1 when negated); a var is a PackageId
  static Lit pos(PackageId v) { return v << 1; }
  static Lit neg(PackageId v) { return (v << 1) | 1u; }
  static PackageId var(Lit l) { return l >> 1; }
  static bool negated(Lit l) { return l & 1u; }

  enum class ReasonKind : uint8_t { kDecision, kFact, kClause, kSlot };
  struct Reason {
    ReasonKind kind = ReasonKind::kDecision;
    uint32_t index = 0;  // kClause: the clause; kSlot: the installed record taking the slot
  };
  enum class ClauseKind : uint8_t { kRequest, kDepends, kConflicts, kLearned };
  struct Clause {
    std::vector<Lit> lits;
    ClauseKind kind;
    PackageId owner = 0;         // kDepends, kConflicts: the record whose atom this is
    const Atom* atom = nullptr;  // kRequest, kDepends, kConflicts
  };
  // A clause that asks for something to be installed: a request, or an installed record's
  // dependency. Decisions are made on these, in this order.
  struct Demand {
    uint32_t clause;
    bool hasOwner;
    PackageId owner;
    std::vector<PackageId> candidates;  // preference order
  };
  // A conflict: the literals that are all false.
  struct Conflict {
    bool none = true;
    std::vector<Lit> lits;
    uint32_t clause = UINT32_MAX;  // or UINT32_MAX for a slot conflict
    PackageId a = 0, b = 0;        // slot conflict between a and b
  };

  int value(Lit l) const {
    const int v = values_[var(l)];
    return negated(l) ? -v : v;
  }
  int level() const { return static_cast<int>(levelStart_.size()); }
  void assign(Lit l, Reason reason);
  Conflict propagate();
  Conflict expand(PackageId id);
  Conflict addClauseDuringSearch(Clause clause);
  uint32_t attach(Clause clause);
  std::vector<Lit> reasonLits(PackageId v) const;
  void analyze(const Conflict& conflict, std::vector<Lit>* learnt, int* backjumpLevel);
  void backtrack(int toLevel);
  bool pickDecision(PackageId* decision);
  const std::vector<PackageId>& candidatesOf(const Atom& atom);
  std::string describe(PackageId v) const;
  std::string sharedSlots(PackageId a, PackageId b) const;  // "'python3', 'cmd:python3'"
  std::string describeStep(PackageId v) const;
  std::string describeConflict(const Conflict& c) const;

  const Catalog& catalog_;
  const size_t maxConflicts_;
  std::vector<int8_t> values_;  // per record: 1 installed, -1 not, 0 open
  std::vector<int32_t> levels_;
  std::vector<Reason> reasons_;
  std::vector<uint8_t> expanded_;
  std::vector<uint8_t> seen_;
  std::vector<Clause> clauses_;
  std::vector<std::vector<uint32_t>> watches_;  // per literal: clauses watching it
  std::vector<Demand> demands_;
  // Demands before this index are satisfied or inactive. Reset by backtracking, and lowered when
  // an expanded record is installed again (its demands become active).
  size_t demandCursor_ = 0;
  std::vector<uint32_t> firstDemand_;  // per expanded record: the index of its first demand
  std::vector<Lit> trail_;
  std::vector<size_t> levelStart_;  // trail index where each decision level starts
  size_t head_ = 0;                 // next trail entry to propagate
  std::unordered_map<const Atom*, std::vector<PackageId>> candidateCache_;
  Conflict final_;  // the conflict that proved unsatisfiability
  bool failedAtStart_ = false;
  bool startConflict_ = false;
  std::vector<PackageId> facts_;
  std::vector<uint8_t> tried_;  // per record: forced on by addFact(id, false)
};

}  // namespace imaged::catalog
