#include "daemon/domain/projection.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <set>

#include <kj/debug.h>
#include "schema/lists.h"

namespace imaged::domain {

const PackageSet LineState::kNoPackages;

const BuildState* ImageState::latestSuccessfulBuild() const {
  for (auto it = builds.rbegin(); it != builds.rend(); ++it) {
    if (it->status == BuildStatus::kSucceeded) return &*it;
  }
  return nullptr;
}

BuildState* ImageState::build(uint64_t id) {
  for (auto it = builds.rbegin(); it != builds.rend(); ++it) {
    if (it->id == id) return &*it;
  }
  return nullptr;
}

std::string ImageState::status() const {
  for (auto it = builds.rbegin(); it != builds.rend(); ++it) {
    switch (it->status) {
      case BuildStatus::kInProgress:
        return "in-progress";
      case BuildStatus::kSucceeded:
        return "created";
      case BuildStatus::kFailed:
        return "failed";
      case BuildStatus::kCancelled:
        continue;
    }
  }
  return "in-progress";
}

std::map<std::string, std::string> ImageState::tags() const {
  const BuildState* ok = latestSuccessfulBuild();
  if (!ok) return {};
  std::vector<catalog::BuiltLine> built;
  for (const LineState& l : ok->lines) {
    if (l.status == LineStatus::kBuilt)
      built.push_back({std::string(l.line), std::string(l.version)});
  }
  return catalog::deriveTags(built);
}

namespace {

using schema_lists::envOf;
using schema_lists::setEnv;
using schema_lists::setTexts;
using schema_lists::texts;

void cancelRunning(ImageState& image, int64_t time, Text code, Text why) {
  for (BuildState& b : image.builds) {
    if (b.status != BuildStatus::kInProgress) continue;
    b.status = BuildStatus::kCancelled;
    b.endedAt = time;
    b.errorCode = code;
    b.errorMessage = why;
  }
}

}  // namespace

void Projection::apply(const schema::Event::Reader& event) {
  lastSequence_ = event.getSequence();
  lastTime_ = std::max(lastTime_, event.getTime());
  const auto id = event.getStreamId();
  const std::string_view streamId(id.begin(), id.size());  // no copy: most events only look up
  auto payload = event.getPayload();

  if (payload.which() == schema::Payload::CATALOG_LOADED) {
    auto loaded = payload.getCatalogLoaded();
    catalog_.digest = loaded.getDigest();
    catalog_.source = loaded.getSource();
    catalog_.starters.clear();
    for (auto s : loaded.getStarters()) {
      auto& lines = catalog_.starters[s.getName()];
      for (auto l : s.getLines()) lines.push_back({l.getLine(), l.getVersion()});
    }
    return;
  }
  if (payload.which() == schema::Payload::IMAGE_CREATED) {
    // A stream is created once; a second creation does not fit the state and is skipped (the
    // image keeps its views into it: streams_ never loses an image).
    if (streams_.count(streamId) != 0) return;
    auto created = payload.getImageCreated();
    ImageState image;
    image.streamId = std::string(streamId);
    image.tenant = intern(created.getTenant().cStr());
    image.name = created.getName();
    image.description = created.getDescription();
    image.starter = intern(created.getStarter().cStr());
    image.packages = intern(texts(created.getPackages()));
    image.env = intern(envOf<EnvVar>(created.getEnv()));
    image.version = event.getStreamVersion();
    if (event.getIdempotencyKey().size() > 0) {
      createdBy_[event.getIdempotencyKey()] = std::string(streamId);
    }
    ImageState& stored = store(std::move(image));
    Name& n = nameOf(stored);
    n.incarnations += 1;
    n.live = &stored;
    return;
  }
  auto it = streams_.find(streamId);
  if (it == streams_.end()) return;  // not an image stream this projection knows
  it->second.version = event.getStreamVersion();
  applyToImage(it->second, event);
}

void Projection::applyToImage(ImageState& image, const schema::Event::Reader& event) {
  const int64_t time = event.getTime();
  auto payload = event.getPayload();
  switch (payload.which()) {
    case schema::Payload::IMAGE_EDITED: {
      auto edited = payload.getImageEdited();
      image.description = edited.getDescription();
      image.packages = intern(texts(edited.getPackages()));
      image.env = intern(envOf<EnvVar>(edited.getEnv()));
      cancelRunning(image, time, intern("E_SUPERSEDED"), intern("superseded by an edit"));
      return;
    }
    case schema::Payload::IMAGE_DELETED:
      image.deleted = true;
      cancelRunning(image, time, intern("E_SUPERSEDED"), intern("the image was deleted"));
      if (auto it = names_.find(NameKey(image.tenant, image.name));
          it != names_.end() && it->second.live == &image) {
        it->second.live = nullptr;
      }
      return;
    case schema::Payload::BUILD_REQUESTED: {
      auto requested = payload.getBuildRequested();
      cancelRunning(image, time, intern("E_SUPERSEDED"), intern("superseded by a newer build"));
      BuildState b;
      b.id = event.getSequence();
      b.number = static_cast<uint32_t>(image.builds.size() + 1);
      b.reason = requested.getReason();
      b.catalogDigest = intern(requested.getCatalogDigest().cStr());
      b.requestedAt = time;
      image.builds.push_back(std::move(b));
      return;
    }
    case schema::Payload::BUILD_STARTED: {
      auto started = payload.getBuildStarted();
      BuildState* b = image.build(started.getBuildId());
      if (!b || b->status != BuildStatus::kInProgress || b->started) return;
      b->started = true;
      b->catalogDigest = intern(started.getCatalogDigest().cStr());
      for (auto l : started.getLines()) {
        LineState line;
        line.line = intern(l.getLine().cStr());
        line.version = intern(l.getVersion().cStr());
        b->lines.push_back(std::move(line));
      }
      return;
    }
    case schema::Payload::LINE_BUILT:
    case schema::Payload::LINE_SKIPPED: {
      const bool built = payload.which() == schema::Payload::LINE_BUILT;
      const uint64_t id =
          built ? payload.getLineBuilt().getBuildId() : payload.getLineSkipped().getBuildId();
      const std::string lineName =
          built ? payload.getLineBuilt().getLine() : payload.getLineSkipped().getLine();
      BuildState* b = image.build(id);
      if (!b || b->status != BuildStatus::kInProgress) return;
      auto line = std::find_if(b->lines.begin(), b->lines.end(),
                               [&](const LineState& l) { return l.line == lineName; });
      if (line == b->lines.end()) return;
      if (built) {
        auto r = payload.getLineBuilt();
        line->version = intern(r.getVersion().cStr());
        PackageSet set;
        set.reserve(r.getPackages().size());
        for (auto p : r.getPackages()) {
          set.push_back(std::string(p.getName()) + "=" + std::string(p.getVersion()));
        }
        line->packages = &*packageSets_.insert(std::move(set)).first;
        line->setBuilt(intern(r.getDigest().cStr()), intern(r.getSbomDigest().cStr()));
      } else {
        auto r = payload.getLineSkipped();
        line->version = intern(r.getVersion().cStr());
        line->setSkipped(intern(r.getCode().cStr()), intern(r.getReason().cStr()));
      }
      return;
    }
    case schema::Payload::BUILD_SUCCEEDED: {
      BuildState* b = image.build(payload.getBuildSucceeded().getBuildId());
      if (!b || b->status != BuildStatus::kInProgress) return;
      b->status = BuildStatus::kSucceeded;
      b->endedAt = time;
      if (image.createdAt == 0) image.createdAt = time;
      return;
    }
    case schema::Payload::BUILD_FAILED: {
      auto failed = payload.getBuildFailed();
      BuildState* b = image.build(failed.getBuildId());
      if (!b || b->status != BuildStatus::kInProgress) return;
      b->status = BuildStatus::kFailed;
      b->endedAt = time;
      b->errorCode = intern(failed.getCode().cStr());
      b->errorMessage = intern(failed.getMessage().cStr());
      return;
    }
    case schema::Payload::BUILD_CANCELLED: {
      auto cancelled = payload.getBuildCancelled();
      BuildState* b = image.build(cancelled.getBuildId());
      if (!b || b->status != BuildStatus::kInProgress) return;
      b->status = BuildStatus::kCancelled;
      b->endedAt = time;
      b->errorCode = intern("E_SUPERSEDED");
      b->errorMessage = intern(cancelled.getReason().cStr());
      return;
    }
    default:
      return;  // unknown to this version: skipped
  }
}

ImageState& Projection::store(ImageState image) {
  const std::string id = image.streamId;
  KJ_REQUIRE(streams_.count(id) == 0, "an image stream is stored twice", id);
  // Inserted under a view of `id`, then re-keyed with a view of the stored image's own id.
  auto node = streams_.extract(streams_.emplace(std::string_view(id), std::move(image)).first);
  node.key() = node.mapped().streamId;
  return streams_.insert(std::move(node)).position->second;
}

Projection::Name& Projection::nameOf(const ImageState& stored) {
  // A new entry's key views this image's tenant and name; an existing one keeps the views of
  // the first image of that name, which stays stored too.
  return names_[NameKey(stored.tenant, stored.name)];
}

const ImageState* Projection::find(const std::string& tenant, const std::string& name) const {
  auto it = names_.find(NameKey(tenant, name));
  return it == names_.end() ? nullptr : it->second.live;
}

const ImageState* Projection::byStream(const std::string& streamId) const {
  auto it = streams_.find(streamId);
  return it == streams_.end() ? nullptr : &it->second;
}

std::vector<const ImageState*> Projection::gallery(const std::string& tenant) const {
  std::vector<const ImageState*> out;
  for (auto it = names_.lower_bound(NameKey(tenant, ""));
       it != names_.end() && it->first.first == tenant; ++it) {
    if (it->second.live) out.push_back(it->second.live);
  }
  return out;
}

std::vector<const ImageState*> Projection::liveImages() const {
  std::vector<const ImageState*> out;
  for (const auto& [k, n] : names_) {
    if (n.live) out.push_back(n.live);
  }
  return out;
}

namespace {
std::string streamIdOf(const std::string& tenant, const std::string& name, uint32_t incarnation) {
  return "image/" + tenant + "/" + name + "/" + std::to_string(incarnation);
}
}  // namespace

std::string Projection::nextStreamId(const std::string& tenant, const std::string& name) const {
  auto it = names_.find(NameKey(tenant, name));
  return streamIdOf(tenant, name, (it == names_.end() ? 0 : it->second.incarnations) + 1);
}

const ImageState* Projection::lastOfName(const std::string& tenant, const std::string& name) const {
  auto it = names_.find(NameKey(tenant, name));
  if (it == names_.end() || it->second.incarnations == 0) return nullptr;
  return byStream(streamIdOf(tenant, name, it->second.incarnations));
}

const ImageState* Projection::byIdempotencyKey(const std::string& key) const {
  auto it = createdBy_.find(key);
  return it == createdBy_.end() ? nullptr : byStream(it->second);
}

std::vector<std::string> Projection::tenants() const {
  std::set<std::string> out;
  for (const auto& [id, image] : streams_) out.insert(image.tenant.str());
  return {out.begin(), out.end()};
}

const char* toString(BuildStatus s) {
  switch (s) {
    case BuildStatus::kInProgress:
      return "in-progress";
    case BuildStatus::kSucceeded:
      return "succeeded";
    case BuildStatus::kFailed:
      return "failed";
    case BuildStatus::kCancelled:
      return "cancelled";
  }
  return "";
}

const char* toString(LineStatus s) {
  switch (s) {
    case LineStatus::kPending:
      return "pending";
    case LineStatus::kBuilt:
      return "built";
    case LineStatus::kSkipped:
      return "skipped";
  }
  return "";
}

const char* toString(schema::BuildReason r) {
  switch (r) {
    case schema::BuildReason::CREATED:
      return "created";
    case schema::BuildReason::EDITED:
      return "edited";
    case schema::BuildReason::REBUILD:
      return "rebuild";
    case schema::BuildReason::CATALOG_CHANGED:
      return "catalog-changed";
    case schema::BuildReason::RESUMED:
      return "resumed";
  }
  return "unknown";
}

}  // namespace imaged::domain
