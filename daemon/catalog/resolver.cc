#include "daemon/catalog/resolver.h"

#include <algorithm>

#include "daemon/catalog/solver.h"

namespace imaged::catalog {
namespace {

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

Error conflictError(const std::string& message) {
  return Error{"E_PACKAGE_CONFLICT", message};
}

class LineResolver {
 public:
  LineResolver(const Catalog& catalog, const LineRequest& request, const ResolveOptions& options)
      : catalog_(catalog), request_(request), options_(options) {}

  LineResolution run() {
    LineResolution out;
    if (auto s = checkAddedPackages(catalog_, request_.added); !s.ok()) {
      out.error = s.error();
      return out;
    }
    for (const Pin& pin : request_.pinned) {
      const Atom exact{pin.name, VersionOp::kEqual, pin.version, false};
      auto found = catalog_.candidates(exact);
      found.erase(
          std::remove_if(found.begin(), found.end(),
                         [&](PackageId id) { return catalog_.package(id).name != pin.name; }),
          found.end());
      if (found.empty()) {
        out.error =
            Error{"E_PACKAGE_NOT_FOUND", "line " + request_.line + " pins " + pin.name + "=" +
                                             pin.version + ", which no repository has"};
        return out;
      }
      pins_.push_back(found.front());
    }
    for (const Atom& atom : request_.added) {
      candidates_.push_back(catalog_.candidates(atom));
      if (candidates_.back().empty()) {
        out.error = conflictError(noMatchMessage(atom));
        out.conflict = {{atom.str()}, {}, out.error->message};
        return out;
      }
    }

    Solver solver(catalog_, options_.maxConflicts);
    for (PackageId p : pins_) solver.addFact(p);
    for (size_t i = 0; i < request_.added.size(); ++i) {
      solver.addRequest(request_.added[i], candidates_[i]);
    }
    switch (solver.solve()) {
      case Solver::Outcome::kSatisfied:
        out.packages = solver.installed();
        std::sort(out.packages.begin(), out.packages.end(), [&](PackageId a, PackageId b) {
          const auto &ra = catalog_.package(a), &rb = catalog_.package(b);
          return ra.name != rb.name ? ra.name < rb.name : a < b;
        });
        return out;
      case Solver::Outcome::kLimit:
        out.error = limitError();
        return out;
      case Solver::Outcome::kUnsatisfiable:
        out.conflict = explain(solver);
        out.error = conflictError(out.conflict.message);
        return out;
    }
    return out;
  }

 private:
  Error limitError() const {
    return Error{"E_RESOLUTION_LIMIT",
                 "line " + request_.line + ": the packages could not be resolved within " +
                     std::to_string(options_.maxConflicts) + " conflicts; simplify the request"};
  }

  std::string noMatchMessage(const Atom& atom) const {
    std::vector<std::string> available;
    for (PackageId id : catalog_.named(atom.name))
      available.push_back(catalog_.package(id).version);
    std::string message = "no package satisfies " + atom.str() + " on line " + request_.line;
    if (!available.empty()) {
      if (available.size() > 5) available.resize(5);
      message += " (" + atom.name + " has " + join(available, ", ") + ")";
    } else {
      message += " (" + atom.name + " is only provided without a version)";
    }
    return message;
  }

  // Solves the pins plus the given requests and tried records; returns the outcome and fills
  // `steps` with the explanation when unsatisfiable.
  Solver::Outcome trial(const std::vector<size_t>& requests, const std::vector<PackageId>& tried,
                        std::vector<std::string>* steps) const {
    Solver s(catalog_, options_.maxConflicts);
    for (PackageId p : pins_) s.addFact(p);
    for (PackageId t : tried) s.addFact(t, /*pinned=*/false);
    for (size_t i : requests) s.addRequest(request_.added[i], candidates_[i]);
    const auto outcome = s.solve();
    if (outcome == Solver::Outcome::kUnsatisfiable && steps) *steps = s.explain();
    return outcome;
  }

  // Why each candidate of request `i` (with the requests in `with`) cannot be installed.
  std::vector<CandidateReason> candidateReasons(size_t i, const std::vector<size_t>& with) const {
    std::vector<CandidateReason> reasons;
    const auto& candidates = candidates_[i];
    for (size_t k = 0; k < candidates.size() && k < options_.maxExplainedCandidates; ++k) {
      const PackageId c = candidates[k];
      std::vector<std::string> steps;
      const auto outcome = trial(with, {c}, &steps);
      std::string reason;
      if (outcome == Solver::Outcome::kUnsatisfiable) {
        const std::string tried = catalog_.label(c) + " is tried";
        steps.erase(std::remove(steps.begin(), steps.end(), tried), steps.end());
        reason = join(steps, "; ");
      } else if (outcome == Solver::Outcome::kLimit) {
        reason = "not decided within the search limit";
      } else {
        reason = "installable alone, but not together with the other added packages";
      }
      reasons.push_back({catalog_.label(c), reason});
    }
    return reasons;
  }

  std::string candidatesMessage(const std::vector<CandidateReason>& reasons, size_t total) const {
    std::string message;
    for (const auto& r : reasons) message += " [" + r.package + "] " + r.reason + ".";
    if (total > reasons.size()) {
      message += " (" + std::to_string(total - reasons.size()) + " more candidates not shown)";
    }
    return message;
  }

  ConflictExplanation explain(const Solver& full) const {
    const std::string where = " on line " + request_.line;
    std::vector<std::string> steps;
    // The pins alone: the starter's own SBOM does not hold together.
    if (trial({}, {}, &steps) == Solver::Outcome::kUnsatisfiable) {
      return {{},
              {},
              "the pinned packages of line " + request_.line +
                  " cannot be installed together: " + join(steps, "; ")};
    }
    // One added package that cannot be installed with the pins.
    for (size_t i = 0; i < request_.added.size(); ++i) {
      if (trial({i}, {}, nullptr) != Solver::Outcome::kUnsatisfiable) continue;
      const std::string atom = request_.added[i].str();
      auto reasons = candidateReasons(i, {});
      const size_t n = candidates_[i].size();
      std::string message = atom + " cannot be installed" + where + ": " +
                            (n == 1 ? "its only candidate fails."
                                    : "none of its " + std::to_string(n) + " candidates fits.") +
                            candidatesMessage(reasons, n);
      return {{atom}, std::move(reasons), message};
    }
    // Two added packages that exclude each other.
    for (size_t i = 0; i < request_.added.size(); ++i) {
      for (size_t j = i + 1; j < request_.added.size(); ++j) {
        if (trial({i, j}, {}, nullptr) != Solver::Outcome::kUnsatisfiable) continue;
        const std::string a = request_.added[i].str(), b = request_.added[j].str();
        auto reasons = candidateReasons(i, {j});
        std::string message = a + " and " + b + " cannot be installed together" + where +
                              ": with " + b + "," +
                              candidatesMessage(reasons, candidates_[i].size());
        return {{a, b}, std::move(reasons), message};
      }
    }
    std::vector<std::string> all;
    for (const Atom& a : request_.added) all.push_back(a.str());
    return {all,
            {},
            "the added packages " + join(all, ", ") + " cannot be installed together" + where +
                ": " + join(full.explain(), "; ")};
  }

  const Catalog& catalog_;
  const LineRequest& request_;
  const ResolveOptions& options_;
  std::vector<PackageId> pins_;
  std::vector<std::vector<PackageId>> candidates_;  // per added atom
};

}  // namespace

Status checkAddedPackages(const Catalog& catalog, const std::vector<Atom>& added) {
  for (const Atom& atom : added) {
    if (atom.conflict) {
      return Error{"E_INVALID_ARGUMENT",
                   "'" + atom.str() + "' is a conflict, not a package to add"};
    }
    if (!catalog.knows(atom.name)) {
      return Error{"E_PACKAGE_NOT_FOUND",
                   "no repository has a package named or providing " + atom.name};
    }
  }
  return Ok{};
}

LineResolution resolveLine(const Catalog& catalog, const LineRequest& request,
                           const ResolveOptions& options) {
  return LineResolver(catalog, request, options).run();
}

}  // namespace imaged::catalog
