#include "daemon/domain/build.h"

#include <algorithm>

#include "daemon/domain/validate.h"

namespace imaged::domain {

catalog::LineResolution ResolutionMemo::resolve(
    const std::shared_ptr<const catalog::Catalog>& catalog, const catalog::LineRequest& request) {
  std::string key = request.line;
  key += '\0';
  for (const catalog::Pin& p : request.pinned) key += p.name + "=" + p.version + '\n';
  key += '\0';
  for (const catalog::Atom& a : request.added) key += a.str() + '\n';
  {
    std::lock_guard lk(mutex_);
    const bool same =
        !catalog_.owner_before(catalog) && !catalog.owner_before(catalog_) && !catalog_.expired();
    if (!same) {
      entries_.clear();
      catalog_ = catalog;
    } else if (auto it = entries_.find(key); it != entries_.end()) {
      return it->second;
    }
  }
  catalog::LineResolution r = catalog::resolveLine(*catalog, request);  // outside the lock
  std::lock_guard lk(mutex_);
  if (!catalog_.owner_before(catalog) && !catalog.owner_before(catalog_)) {
    if (entries_.size() >= kMaxEntries) entries_.clear();
    entries_.emplace(std::move(key), r);
  }
  return r;
}

size_t ResolutionMemo::size() const {
  std::lock_guard lk(mutex_);
  return entries_.size();
}

Result<std::vector<LineJob>> planBuild(const std::shared_ptr<const catalog::Catalog>& catalog,
                                       const ImageState& image, uint64_t buildId,
                                       std::shared_ptr<image::BlobStore> blobs,
                                       std::shared_ptr<ResolutionMemo> memo) {
  const catalog::Starter* starter = catalog->findStarter(image.starter);
  if (!starter) {
    return Error{"E_STARTER_NOT_FOUND",
                 "the catalog no longer offers the starter image '" + image.starter.str() + "'"};
  }
  auto atoms = validatePackages(image.packages, *catalog);
  if (!atoms.ok()) return atoms.error();
  std::vector<LineJob> jobs;
  for (const catalog::StarterLine& line : starter->lines) {
    if (!line.maintained) continue;
    LineJob job{catalog,
                buildId,
                line.line,
                line.production().version,
                line.production().packages,
                *atoms,
                blobs,
                nullptr,
                memo,
                {}};
    image::LineImageInput& in = job.image;
    in.catalog = catalog;
    in.tenant = image.tenant.str();
    in.starter = starter->name;
    in.line = line.line;
    in.version = line.production().version;
    in.published = line.production().published;
    for (const auto& e : starter->environmentFor(line)) in.env.emplace_back(e.key, e.value);
    for (const auto& e : image.env) in.env.emplace_back(e.key, e.value);
    in.entrypoint = starter->entrypoint;
    in.cmd = starter->cmd;
    in.user = starter->user;
    in.workdir = starter->workdir;
    for (const auto& p : line.production().packages) in.world.push_back(p.name + "=" + p.version);
    for (const auto& p : image.packages) in.world.push_back(p);
    jobs.push_back(std::move(job));
  }
  return jobs;
}

LineOutcome buildLine(const LineJob& job) {
  LineOutcome out{job.buildId, job.line, job.version, false, {}, {}, {}, {}, {}};
  auto superseded = [&] {
    if (!job.cancelled || !*job.cancelled) return false;
    out.code = "E_SUPERSEDED";
    out.reason = "the build was superseded";
    return true;
  };
  if (superseded()) return out;
  const catalog::LineRequest request{job.line, job.pins, job.added};
  auto r = job.memo ? job.memo->resolve(job.catalog, request)
                    : catalog::resolveLine(*job.catalog, request);
  if (!r.ok()) {
    out.code = r.error->code;
    out.reason = r.error->message;
    return out;
  }
  // Images come from package files: a line whose repositories ship none is resolved only.
  const bool withImage =
      job.blobs && std::any_of(r.packages.begin(), r.packages.end(), [&](catalog::PackageId id) {
        return job.catalog->repositories()[job.catalog->repositoryOf(id)].hasPackageFiles;
      });
  if (withImage) {
    if (superseded()) return out;
    image::LineImageInput in = job.image;
    in.packages = r.packages;
    auto manifest = image::writeLineImage(in, *job.blobs);
    if (!manifest.ok()) {
      out.code = manifest.error().code;
      out.reason = manifest.error().message;
      return out;
    }
    out.digest = manifest->manifest.digest;
    out.sbomDigest = manifest->sbom.digest;
  }
  out.built = true;
  for (catalog::PackageId id : r.packages) {
    const auto& record = job.catalog->package(id);
    out.packages.push_back({record.name, record.version});
  }
  return out;
}

events::Payload lineEvent(const LineOutcome& o) {
  if (o.built)
    return events::lineBuilt(o.buildId, o.line, o.version, o.packages, o.digest, o.sbomDigest);
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
