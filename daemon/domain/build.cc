#include "daemon/domain/build.h"

#include "daemon/domain/validate.h"

namespace imaged::domain {

Result<std::vector<LineJob>> planBuild(const std::shared_ptr<const catalog::Catalog>& catalog,
                                       const ImageState& image, uint64_t buildId) {
  const catalog::Starter* starter = catalog->findStarter(image.starter);
  if (!starter) {
    return Error{"E_STARTER_NOT_FOUND",
                 "the catalog no longer offers the starter image '" + image.starter + "'"};
  }
  auto atoms = validatePackages(image.packages, *catalog);
  if (!atoms.ok()) return atoms.error();
  std::vector<LineJob> jobs;
  for (const catalog::StarterLine& line : starter->lines) {
    if (!line.maintained) continue;
    jobs.push_back({catalog, buildId, line.line, line.production().version,
                    line.production().packages, *atoms});
  }
  return jobs;
}

LineOutcome buildLine(const LineJob& job) {
  LineOutcome out{job.buildId, job.line, job.version, false, {}, {}, {}};
  auto r = catalog::resolveLine(*job.catalog, {job.line, job.pins, job.added});
  if (!r.ok()) {
    out.code = r.error->code;
    out.reason = r.error->message;
    return out;
  }
  out.built = true;
  for (catalog::PackageId id : r.packages) {
    const auto& record = job.catalog->package(id);
    out.packages.push_back({record.name, record.version});
  }
  return out;
}

events::Payload lineEvent(const LineOutcome& o) {
  if (o.built) return events::lineBuilt(o.buildId, o.line, o.version, o.packages, "");
  return events::lineSkipped(o.buildId, o.line, o.version, o.code, o.reason);
}

events::Payload endEvent(uint64_t buildId, const std::vector<LineOutcome>& outcomes) {
  std::string reasons;
  for (const LineOutcome& o : outcomes) {
    if (o.built) return events::buildSucceeded(buildId);
    reasons += (reasons.empty() ? "" : " | ") + ("line " + o.line + ": " + o.reason);
  }
  if (outcomes.empty()) {
    return events::buildFailed(buildId, "E_NO_BUILDABLE_LINE",
                               "the starter has no maintained line");
  }
  return events::buildFailed(buildId, "E_NO_BUILDABLE_LINE", "no line could be built: " + reasons);
}

}  // namespace imaged::domain
