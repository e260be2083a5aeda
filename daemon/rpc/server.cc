#include "daemon/rpc/server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <capnp/serialize.h>
#include <kj/debug.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "daemon/domain/validate.h"
#include "daemon/rpc/asio_stream.h"
#include "schema/lists.h"

namespace imaged::rpc {
namespace {

using schema_lists::envOf;
using schema_lists::setEnv;
using schema_lists::setTexts;
using schema_lists::texts;

using domain::BuildStatus;
using domain::ImageState;
using domain::LineState;
using domain::LineStatus;

template <typename Builder>
void setError(Builder results, const Error& e) {
  auto err = results.initError();
  err.setCode(e.code);
  err.setMessage(e.message);
}

void fillLine(api::LineResult::Builder b, const LineState& l) {
  b.setLine(domain::cstr(l.line));
  b.setVersion(domain::cstr(l.version));
  b.setStatus(domain::toString(l.status));
  setTexts(b.initPackages(l.packages->size()), *l.packages);
  b.setCode(domain::cstr(l.code()));
  b.setReason(domain::cstr(l.reason()));
  b.setDigest(l.digest().c_str());
}

void fillBuild(api::Build::Builder b, const domain::BuildState& s) {
  b.setId(s.id);
  b.setNumber(s.number);
  b.setReason(domain::toString(s.reason));
  b.setStatus(domain::toString(s.status));
  b.setRequestedAt(domain::formatTime(s.requestedAt));
  b.setEndedAt(domain::formatTime(s.endedAt));
  b.setCatalogDigest(domain::cstr(s.catalogDigest));
  auto lines = b.initLines(s.lines.size());
  for (size_t i = 0; i < s.lines.size(); ++i) fillLine(lines[i], s.lines[i]);
  if (!s.errorCode.empty()) {
    auto e = b.initError();
    e.setCode(domain::cstr(s.errorCode));
    e.setMessage(domain::cstr(s.errorMessage));
  }
}

void fillImage(api::Image::Builder b, const ImageState& image, bool withBuilds) {
  b.setName(image.name);
  b.setFullName(image.tenant.str() + "/" + image.name);
  b.setTenant(image.tenant.c_str());
  b.setDescription(image.description);
  b.setStarter(image.starter.c_str());
  b.setStatus(image.status());
  b.setCreatedAt(domain::formatTime(image.createdAt));
  setTexts(b.initPackages(image.packages.size()), image.packages);
  setEnv(b.initEnv(image.env.size()), image.env.get());
  b.setVersion(image.version);
  if (const domain::BuildState* latest = image.latestBuild()) {
    auto lines = b.initLines(latest->lines.size());
    for (size_t i = 0; i < latest->lines.size(); ++i) fillLine(lines[i], latest->lines[i]);
    if (latest->status == BuildStatus::kFailed) {
      auto e = b.initError();
      e.setCode(domain::cstr(latest->errorCode));
      e.setMessage(domain::cstr(latest->errorMessage));
    }
  }
  const auto tags = image.tags();
  const domain::BuildState* ok = image.latestSuccessfulBuild();
  auto tagList = b.initTags(tags.size());
  size_t i = 0;
  for (const auto& [tag, version] : tags) {
    tagList[i].setTag(tag);
    tagList[i].setVersion(version);
    if (ok) {
      for (const LineState& l : ok->lines) {
        if (l.version == version && l.status == LineStatus::kBuilt)
          tagList[i].setDigest(l.digest().c_str());
      }
    }
    ++i;
  }
  if (withBuilds) {
    auto builds = b.initBuilds(image.builds.size());
    for (size_t j = 0; j < image.builds.size(); ++j) fillBuild(builds[j], image.builds[j]);
  }
}

void fillPreviewLine(api::LineResult::Builder b, const domain::LineOutcome& o) {
  b.setLine(o.line);
  b.setVersion(o.version);
  b.setStatus(o.built ? "built" : "skipped");
  auto packages = b.initPackages(o.packages.size());
  for (size_t i = 0; i < o.packages.size(); ++i) {
    packages.set(i, o.packages[i].name + "=" + o.packages[i].version);
  }
  b.setCode(o.code);
  b.setReason(o.reason);
}

std::string describeEvent(const schema::Event::Reader& e) {
  auto p = e.getPayload();
  switch (p.which()) {
    case schema::Payload::IMAGE_CREATED: {
      auto c = p.getImageCreated();
      return "created from " + std::string(c.getStarter()) + " with " +
             std::to_string(c.getPackages().size()) + " added packages";
    }
    case schema::Payload::IMAGE_EDITED:
      return "edited: " + std::to_string(p.getImageEdited().getPackages().size()) +
             " added packages, " + std::to_string(p.getImageEdited().getEnv().size()) + " env vars";
    case schema::Payload::IMAGE_DELETED:
      return "deleted";
    case schema::Payload::BUILD_REQUESTED:
      return std::string("build ") + std::to_string(e.getSequence()) + " requested (" +
             domain::toString(p.getBuildRequested().getReason()) + ")";
    case schema::Payload::BUILD_STARTED:
      return "build " + std::to_string(p.getBuildStarted().getBuildId()) +
             " started: " + std::to_string(p.getBuildStarted().getLines().size()) + " lines";
    case schema::Payload::LINE_BUILT:
      return "line " + std::string(p.getLineBuilt().getLine()) + " built (" +
             std::string(p.getLineBuilt().getVersion()) + ", " +
             std::to_string(p.getLineBuilt().getPackages().size()) + " packages)";
    case schema::Payload::LINE_SKIPPED:
      return "line " + std::string(p.getLineSkipped().getLine()) +
             " skipped: " + std::string(p.getLineSkipped().getCode());
    case schema::Payload::BUILD_SUCCEEDED:
      return "build " + std::to_string(p.getBuildSucceeded().getBuildId()) + " succeeded";
    case schema::Payload::BUILD_FAILED:
      return "build " + std::to_string(p.getBuildFailed().getBuildId()) +
             " failed: " + std::string(p.getBuildFailed().getCode());
    case schema::Payload::BUILD_CANCELLED:
      return "build " + std::to_string(p.getBuildCancelled().getBuildId()) +
             " cancelled: " + std::string(p.getBuildCancelled().getReason());
    case schema::Payload::CATALOG_LOADED:
      return "catalog " + std::string(p.getCatalogLoaded().getDigest()) + " loaded";
    default:
      return "unknown event";
  }
}

const char* kindOf(const schema::Event::Reader& e) {
  switch (e.getPayload().which()) {
    case schema::Payload::IMAGE_CREATED:
      return "imageCreated";
    case schema::Payload::IMAGE_EDITED:
      return "imageEdited";
    case schema::Payload::IMAGE_DELETED:
      return "imageDeleted";
    case schema::Payload::BUILD_REQUESTED:
      return "buildRequested";
    case schema::Payload::BUILD_STARTED:
      return "buildStarted";
    case schema::Payload::LINE_BUILT:
      return "lineBuilt";
    case schema::Payload::LINE_SKIPPED:
      return "lineSkipped";
    case schema::Payload::BUILD_SUCCEEDED:
      return "buildSucceeded";
    case schema::Payload::BUILD_FAILED:
      return "buildFailed";
    case schema::Payload::BUILD_CANCELLED:
      return "buildCancelled";
    case schema::Payload::CATALOG_LOADED:
      return "catalogLoaded";
    default:
      return "unknown";
  }
}

domain::CreateRequest specOf(api::ImageSpec::Reader s) {
  return {s.getName(), s.getDescription(), s.getStarter(), texts(s.getPackages()),
          envOf<catalog::EnvVar>(s.getEnv())};
}

// A capability whose only job is to run something when the client drops it.
class HandleImpl final : public api::Handle::Server {
 public:
  explicit HandleImpl(kj::Own<void> held) : held_(kj::mv(held)) {}

 private:
  kj::Own<void> held_;
};

// Sends one image's build progress to a watcher; removes itself from the service when dropped.
class Watch {
 public:
  Watch(Service& service, api::BuildWatcher::Client watcher, std::string tenant, std::string name,
        std::string streamId, uint64_t buildId)
      : service_(service),
        watcher_(kj::mv(watcher)),
        tenant_(kj::mv(tenant)),
        name_(kj::mv(name)),
        streamId_(kj::mv(streamId)),
        buildId_(buildId) {
    observer_ = service_.addObserver([this](const schema::Event::Reader& e) { onEvent(e); });
  }
  ~Watch() {
    if (observer_) service_.removeObserver(observer_);
  }

  // The lines the build has already recorded, so that a watch started after some of them
  // misses none.
  void sendRecordedLines(const domain::BuildState& build) {
    for (const LineState& l : build.lines) {
      if (l.status == LineStatus::kPending) continue;
      auto req = watcher_.lineRequest();
      fillLine(req.initResult(), l);
      queue([req = kj::mv(req)]() mutable { return req.send(); });
    }
  }

  void sendEnded() {
    const ImageState* image = service_.projection().byStream(streamId_);
    auto req = watcher_.endedRequest();
    if (image) fillImage(req.initImage(), *image, false);
    queue([req = kj::mv(req)]() mutable { return req.send().ignoreResult(); });
    if (observer_) service_.removeObserver(observer_);
    observer_ = 0;
  }

 private:
  void onEvent(const schema::Event::Reader& e) {
    if (std::string_view(e.getStreamId().cStr()) != streamId_) return;
    auto p = e.getPayload();
    const ImageState* image = service_.projection().byStream(streamId_);
    if (!image) return;
    if ((p.which() == schema::Payload::LINE_BUILT && p.getLineBuilt().getBuildId() == buildId_) ||
        (p.which() == schema::Payload::LINE_SKIPPED &&
         p.getLineSkipped().getBuildId() == buildId_)) {
      const std::string line = p.which() == schema::Payload::LINE_BUILT
                                   ? p.getLineBuilt().getLine()
                                   : p.getLineSkipped().getLine();
      for (const domain::BuildState& b : image->builds) {
        if (b.id != buildId_) continue;
        for (const LineState& l : b.lines) {
          if (l.line != line) continue;
          auto req = watcher_.lineRequest();
          fillLine(req.initResult(), l);
          queue([req = kj::mv(req)]() mutable { return req.send(); });
        }
      }
      return;
    }
    for (const domain::BuildState& b : image->builds) {
      if (b.id == buildId_ && b.status != BuildStatus::kInProgress) {
        sendEnded();
        return;
      }
    }
    if (image->deleted) sendEnded();
  }

  template <typename Fn>
  void queue(Fn&& send) {
    tail_ = tail_.then(kj::fwd<Fn>(send)).eagerlyEvaluate([](kj::Exception&&) {});
  }

  Service& service_;
  api::BuildWatcher::Client watcher_;
  std::string tenant_, name_, streamId_;
  uint64_t buildId_;
  uint64_t observer_ = 0;
  kj::Promise<void> tail_ = kj::READY_NOW;
};

// Sends every event from a position on to a subscriber, one batch in flight at a time: what the
// subscriber has not taken stays in the log, not in memory.
class EventFeed {
 public:
  EventFeed(Service& service, api::EventSubscriber::Client subscriber, uint64_t from)
      : service_(service), subscriber_(kj::mv(subscriber)), next_(from == 0 ? 1 : from) {
    observer_ = service_.addObserver([this](const schema::Event::Reader&) { pump(); });
    pump();
  }
  ~EventFeed() { service_.removeObserver(observer_); }

 private:
  // Starts sending when idle. Called when the feed starts and after every commit.
  void pump() {
    if (sending_ || failed_) return;
    sending_ = true;
    inFlight_ = sendFrom().eagerlyEvaluate([this](kj::Exception&&) { failed_ = true; });
  }

  // Sends the next batch and, once the subscriber has taken it, the one after, until caught up.
  // Each step returns the rest of the chain: nothing replaces a promise while it runs.
  kj::Promise<void> sendFrom() {
    std::vector<store::StoredEvent> batch;
    if (auto txn = service_.log().read(); txn.ok()) {
      (void)(*txn)->forEach(next_, [&](const store::EventRef& e) {
        batch.push_back({e.sequence(), kj::heapArray(e.words())});
        return batch.size() < 256;
      });
    }
    if (batch.empty()) {
      sending_ = false;
      return kj::READY_NOW;
    }
    auto req = subscriber_.eventsRequest();
    auto list = req.initEvents(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) list.set(i, batch[i].words.asBytes());
    next_ = batch.back().sequence + 1;
    return req.send().then([this] { return sendFrom(); });
  }

  Service& service_;
  api::EventSubscriber::Client subscriber_;
  uint64_t next_;
  uint64_t observer_ = 0;
  bool sending_ = false, failed_ = false;
  kj::Promise<void> inFlight_ = kj::READY_NOW;
};

class ImagedImpl final : public api::Imaged::Server {
 public:
  ImagedImpl(Service& service, std::optional<domain::Caller> caller, bool admin,
             std::shared_ptr<spdlog::logger> logger, uid_t uid)
      : service_(service),
        caller_(std::move(caller)),
        admin_(admin),
        logger_(std::move(logger)),
        uid_(uid) {}

  kj::Promise<void> listStarters(ListStartersContext context) override {
    return handle("listStarters", context, [&]() -> Status {
      auto c = service_.catalog();
      auto list = context.getResults().initStarters(c->starters().size());
      for (size_t i = 0; i < c->starters().size(); ++i) {
        const auto& s = c->starters()[i];
        list[i].setName(s.name);
        list[i].setDescription(s.description);
        auto lines = list[i].initLines(s.lines.size());
        for (size_t j = 0; j < s.lines.size(); ++j) lines.set(j, s.lines[j].line);
      }
      return Ok{};
    });
  }

  kj::Promise<void> getStarter(GetStarterContext context) override {
    return handle("getStarter", context, [&]() -> Status {
      auto c = service_.catalog();
      const catalog::Starter* s = c->findStarter(context.getParams().getName().cStr());
      if (!s)
        return Error{"E_STARTER_NOT_FOUND",
                     "no starter image named '" + std::string(context.getParams().getName()) + "'"};
      auto b = context.getResults().initStarter();
      b.setName(s->name);
      b.setDescription(s->description);
      setEnv(b.initEnvironment(s->environment.size()), s->environment);
      setTexts(b.initEntrypoint(s->entrypoint.size()), s->entrypoint);
      setTexts(b.initCmd(s->cmd.size()), s->cmd);
      b.setUser(s->user);
      b.setWorkdir(s->workdir);
      auto lines = b.initLines(s->lines.size());
      for (size_t i = 0; i < s->lines.size(); ++i) {
        const auto& l = s->lines[i];
        lines[i].setLine(l.line);
        lines[i].setMaintained(l.maintained);
        lines[i].setProduction(l.production().version);
        setEnv(lines[i].initEnvironment(s->environmentFor(l).size()), s->environmentFor(l));
        auto versions = lines[i].initVersions(l.versions.size());
        for (size_t j = 0; j < l.versions.size(); ++j) {
          versions[j].setVersion(l.versions[j].version);
          versions[j].setPublished(l.versions[j].published);
          std::vector<std::string> pins;
          for (const auto& p : l.versions[j].packages) pins.push_back(p.name + "=" + p.version);
          setTexts(versions[j].initPackages(pins.size()), pins);
        }
        std::vector<std::string> licenses;
        for (const auto& p : l.production().packages) {
          for (catalog::PackageId id : c->named(p.name)) {
            if (c->package(id).version == p.version)
              licenses.push_back(p.name + ": " + c->package(id).license);
          }
        }
        setTexts(lines[i].initLicenses(licenses.size()), licenses);
      }
      return Ok{};
    });
  }

  kj::Promise<void> searchPackages(SearchPackagesContext context) override {
    return handle("searchPackages", context, [&]() -> Status {
      const uint32_t limit = std::min<uint32_t>(
          context.getParams().getLimit() ? context.getParams().getLimit() : 20, 1000);
      auto hits = service_.catalog()->search(context.getParams().getQuery().cStr(), limit);
      auto list = context.getResults().initHits(hits.size());
      for (size_t i = 0; i < hits.size(); ++i) {
        list[i].setName(hits[i].name);
        list[i].setVersion(hits[i].version);
        list[i].setDescription(hits[i].description);
        setTexts(list[i].initVersions(hits[i].versions.size()), hits[i].versions);
      }
      return Ok{};
    });
  }

  kj::Promise<void> preview(PreviewContext context) override {
    const auto start = std::chrono::steady_clock::now();
    auto c = service_.catalog();
    domain::CreateRequest spec = specOf(context.getParams().getSpec());
    Result<std::vector<domain::LineJob>> jobs = Error{"E_PERMISSION_DENIED", ""};
    if (!caller_) {
      jobs = unmapped();
    } else if (auto atoms = domain::validateSpec(*c, spec, false); !atoms.ok()) {
      jobs = atoms.error();
    } else {
      domain::ImageState image;
      image.starter = domain::Text(&spec.starter);                       // spec outlives it
      image.packages = domain::SharedList<std::string>(&spec.packages);  // spec outlives it
      jobs = domain::planBuild(c, image, 0);
    }
    if (!jobs.ok()) {
      setError(context.getResults(), jobs.error());
      logCall("preview", start, jobs.error().code);
      return kj::READY_NOW;
    }
    // Resolution runs on the build workers, never on the loop thread.
    using Outcomes = std::shared_ptr<std::vector<domain::LineOutcome>>;
    auto paf = kj::newPromiseAndFulfiller<Outcomes>();
    auto fulfiller =
        std::make_shared<kj::Own<kj::PromiseFulfiller<Outcomes>>>(kj::mv(paf.fulfiller));
    service_.resolveLines(
        std::move(jobs).value(), [fulfiller](std::vector<domain::LineOutcome> outcomes) {
          (*fulfiller)
              ->fulfill(std::make_shared<std::vector<domain::LineOutcome>>(std::move(outcomes)));
        });
    return paf.promise.then([this, context, start](Outcomes outcomes) mutable {
      auto lines = context.getResults().initLines(outcomes->size());
      for (size_t i = 0; i < outcomes->size(); ++i) fillPreviewLine(lines[i], (*outcomes)[i]);
      logCall("preview", start, "");
    });
  }

  kj::Promise<void> createImage(CreateImageContext context) override {
    // A retry of a create that was already recorded: the image it created, nothing recorded.
    if (caller_ && context.getParams().getIdempotencyKey().size() > 0) {
      const std::string key = domain::scopedKey(*caller_, context.getParams().getIdempotencyKey());
      if (const ImageState* image = service_.projection().byIdempotencyKey(key)) {
        fillImage(context.getResults().initImage(), *image, false);
        logCall("createImage", std::chrono::steady_clock::now(), "");
        return kj::READY_NOW;
      }
    }
    return write(
        "createImage", context,
        [this, context]() mutable {
          auto params = context.getParams();
          return domain::planCreate(service_.projection(), *service_.catalog(), *caller_,
                                    specOf(params.getSpec()), params.getIdempotencyKey());
        },
        [this, context](const store::AppendResult& r) mutable {
          // The image the first request created (a retry may come after later edits).
          auto txn = service_.log().read();
          std::string stream;
          if (txn.ok()) {
            if (auto e = (*txn)->get(r.firstSequence); e.ok()) {
              capnp::FlatArrayMessageReader reader(e->words);
              stream = reader.getRoot<schema::Event>().getStreamId();
            }
          }
          if (const ImageState* image = service_.projection().byStream(stream)) {
            fillImage(context.getResults().initImage(), *image, false);
          }
        });
  }

  kj::Promise<void> getImage(GetImageContext context) override {
    return handle("getImage", context, [&]() -> Status {
      const std::string name = context.getParams().getName();
      const std::string at = context.getParams().getAtTime();
      if (at.empty()) {
        auto image = domain::findImage(service_.projection(), *caller_, name);
        if (!image.ok()) return image.error();
        fillImage(context.getResults().initImage(), **image, true);
        return Ok{};
      }
      auto time = parseTimeAsOf(at);
      if (!time) return Error{"E_INVALID_ARGUMENT", "'" + at + "' is not an RFC 3339 time"};
      // The image as it was then, replayed from the log: only the streams of the images that
      // ever had this name (image/<tenant>/<name>/1, /2, ...), one after the other, as each
      // was created after the one before was deleted.
      domain::Projection past;
      auto txn = service_.log().read();
      if (!txn.ok()) return txn.error();
      for (int n = 1;; ++n) {
        const std::string stream =
            "image/" + caller_->tenant + "/" + name + "/" + std::to_string(n);
        if ((*txn)->streamVersion(stream) == 0) break;
        bool later = false;
        auto s = (*txn)->forEachInStream(stream, 1, [&](const store::EventRef& e) {
          capnp::FlatArrayMessageReader reader(e.words());
          auto event = reader.getRoot<schema::Event>();
          if (event.getTime() > *time) return !(later = true);
          past.apply(event);
          return true;
        });
        if (!s.ok()) return s.error();
        if (later) break;
      }
      const ImageState* image = past.find(caller_->tenant, name);
      if (!image)
        return Error{"E_NOT_FOUND", "no image named " + caller_->tenant + "/" + name + " at " + at};
      fillImage(context.getResults().initImage(), *image, true);
      return Ok{};
    });
  }

  kj::Promise<void> listImages(ListImagesContext context) override {
    return handle("listImages", context, [&]() -> Status {
      auto gallery = service_.projection().gallery(caller_->tenant);
      auto list = context.getResults().initImages(gallery.size());
      for (size_t i = 0; i < gallery.size(); ++i) fillImage(list[i], *gallery[i], false);
      return Ok{};
    });
  }

  kj::Promise<void> editImage(EditImageContext context) override {
    return write(
        "editImage", context,
        [this, context]() mutable {
          auto params = context.getParams();
          auto e = params.getEdit();
          domain::EditRequest edit;
          edit.addPackages = texts(e.getAddPackages());
          edit.removePackages = texts(e.getRemovePackages());
          edit.setEnv = envOf<catalog::EnvVar>(e.getSetEnv());
          edit.unsetEnv = texts(e.getUnsetEnv());
          if (e.getHasDescription()) edit.description = std::string(e.getDescription());
          if (e.getStarter().size()) edit.starter = std::string(e.getStarter());
          if (e.getName().size()) edit.name = std::string(e.getName());
          return domain::planEdit(service_.projection(), *service_.catalog(), *caller_,
                                  params.getName(), edit, params.getExpectedVersion());
        },
        [this, context](const store::AppendResult&) mutable { fillCurrent(context); });
  }

  kj::Promise<void> rebuildImage(RebuildImageContext context) override {
    return write(
        "rebuildImage", context,
        [this, context]() mutable -> Result<store::AppendRequest> {
          auto image =
              domain::findImage(service_.projection(), *caller_, context.getParams().getName());
          if (!image.ok()) return image.error();
          return domain::planRebuild(service_.projection(), *service_.catalog(), *caller_, **image,
                                     schema::BuildReason::REBUILD,
                                     context.getParams().getExpectedVersion());
        },
        [this, context](const store::AppendResult&) mutable { fillCurrent(context); });
  }

  kj::Promise<void> deleteImage(DeleteImageContext context) override {
    return write(
        "deleteImage", context,
        [this, context]() mutable {
          return domain::planDelete(service_.projection(), *caller_, context.getParams().getName(),
                                    context.getParams().getExpectedVersion());
        },
        [](const store::AppendResult&) {});
  }

  kj::Promise<void> history(HistoryContext context) override {
    return handle("history", context, [&]() -> Status {
      auto image = domain::findImageOrDeleted(service_.projection(), *caller_,
                                              context.getParams().getName());
      if (!image.ok()) return image.error();
      auto txn = service_.log().read();
      if (!txn.ok()) return txn.error();
      struct Entry {
        uint64_t sequence, version;
        int64_t time;
        std::string kind, summary, actor;
      };
      std::vector<Entry> entries;
      auto s = (*txn)->forEachInStream((*image)->streamId, 1, [&](const store::EventRef& e) {
        capnp::FlatArrayMessageReader reader(e.words());
        auto ev = reader.getRoot<schema::Event>();
        auto a = ev.getActor();
        entries.push_back({ev.getSequence(), ev.getStreamVersion(), ev.getTime(), kindOf(ev),
                           describeEvent(ev),
                           std::string(a.getTenant()) + "/" + std::to_string(a.getUid()) + "/" +
                               std::string(a.getClient())});
        return true;
      });
      if (!s.ok()) return s.error();
      auto list = context.getResults().initEntries(entries.size());
      for (size_t i = 0; i < entries.size(); ++i) {
        list[i].setSequence(entries[i].sequence);
        list[i].setVersion(entries[i].version);
        list[i].setTime(domain::formatTime(entries[i].time));
        list[i].setKind(entries[i].kind);
        list[i].setSummary(entries[i].summary);
        list[i].setActor(entries[i].actor);
      }
      return Ok{};
    });
  }

  kj::Promise<void> watch(WatchContext context) override {
    return handle("watch", context, [&]() -> Status {
      auto image =
          domain::findImage(service_.projection(), *caller_, context.getParams().getName());
      if (!image.ok()) return image.error();
      fillImage(context.getResults().initImage(), **image, false);
      const domain::BuildState* latest = (*image)->latestBuild();
      auto watch = kj::heap<Watch>(service_, context.getParams().getWatcher(), caller_->tenant,
                                   (*image)->name, (*image)->streamId, latest ? latest->id : 0);
      if (latest) watch->sendRecordedLines(*latest);
      if (!latest || latest->status != BuildStatus::kInProgress) watch->sendEnded();
      context.getResults().setHandle(kj::heap<HandleImpl>(kj::mv(watch)));
      return Ok{};
    });
  }

  kj::Promise<void> readEvents(ReadEventsContext context) override {
    return handle("readEvents", context, [&]() -> Status {
      if (!admin_) return denied("reading the whole log");
      const uint32_t limit = std::min<uint32_t>(
          context.getParams().getLimit() ? context.getParams().getLimit() : 1000, 10000);
      auto txn = service_.log().read();
      if (!txn.ok()) return txn.error();
      std::vector<store::StoredEvent> events;
      auto s = (*txn)->forEach(context.getParams().getFrom(), [&](const store::EventRef& e) {
        events.push_back({e.sequence(), kj::heapArray(e.words())});
        return events.size() < limit;
      });
      if (!s.ok()) return s.error();
      auto list = context.getResults().initEvents(events.size());
      for (size_t i = 0; i < events.size(); ++i) list.set(i, events[i].words.asBytes());
      context.getResults().setLast((*txn)->lastSequence());
      return Ok{};
    });
  }

  kj::Promise<void> subscribe(SubscribeContext context) override {
    return handle("subscribe", context, [&]() -> Status {
      if (!admin_) return denied("subscribing to the whole log");
      auto feed = kj::heap<EventFeed>(service_, context.getParams().getSubscriber(),
                                      context.getParams().getFrom());
      context.getResults().setHandle(kj::heap<HandleImpl>(kj::mv(feed)));
      return Ok{};
    });
  }

  kj::Promise<void> reloadCatalog(ReloadCatalogContext context) override {
    const auto start = std::chrono::steady_clock::now();
    if (!caller_ || !admin_) {
      setError(context.getResults(), caller_ ? denied("reloading the catalog") : unmapped());
      logCall("reloadCatalog", start, "E_PERMISSION_DENIED");
      return kj::READY_NOW;
    }
    // Results travel through KJ behind a shared_ptr: GCC 12 sees phantom uninitialized reads
    // in std::variant inside kj::ExceptionOr.
    using Loaded = std::shared_ptr<Result<std::shared_ptr<const catalog::Catalog>>>;
    auto paf = kj::newPromiseAndFulfiller<Loaded>();
    auto fulfiller = std::make_shared<kj::Own<kj::PromiseFulfiller<Loaded>>>(kj::mv(paf.fulfiller));
    service_.reloadCatalog([fulfiller](Result<std::shared_ptr<const catalog::Catalog>> r) {
      (*fulfiller)
          ->fulfill(
              std::make_shared<Result<std::shared_ptr<const catalog::Catalog>>>(std::move(r)));
    });
    return paf.promise.then([this, context, start](Loaded r) mutable {
      if (!r->ok()) {
        setError(context.getResults(), r->error());
      } else {
        fillCatalog(context.getResults().initCatalog(), ***r);
      }
      logCall("reloadCatalog", start, r->ok() ? "" : r->error().code);
    });
  }

  kj::Promise<void> catalogInfo(CatalogInfoContext context) override {
    return handle("catalogInfo", context, [&]() -> Status {
      fillCatalog(context.getResults().initCatalog(), *service_.catalog());
      return Ok{};
    });
  }

  kj::Promise<void> exportImage(ExportImageContext context) override {
    return handle("exportImage", context, [&]() -> Status {
      auto image =
          domain::findImage(service_.projection(), *caller_, context.getParams().getName());
      if (!image.ok()) return image.error();
      std::vector<std::string> wanted;
      for (auto t : context.getParams().getTags()) wanted.emplace_back(t);
      auto plan = exportPlan(**image, wanted);
      if (!plan.ok()) return plan.error();
      auto manifests = context.getResults().initManifests(plan->tags.size());
      for (size_t i = 0; i < plan->tags.size(); ++i) {
        manifests[i].setTag(plan->tags[i].tag);
        manifests[i].setVersion(plan->tags[i].version);
        manifests[i].setDigest(plan->tags[i].digest);
      }
      auto blobs = context.getResults().initBlobs(plan->blobs.size());
      size_t i = 0;
      for (const auto& [digest, d] : plan->blobs) {
        blobs[i].setDigest(digest);
        blobs[i].setMediaType(d.mediaType);
        blobs[i].setSize(d.size);
        ++i;
      }
      return Ok{};
    });
  }

  kj::Promise<void> readBlob(ReadBlobContext context) override {
    return handle("readBlob", context, [&]() -> Status {
      auto image =
          domain::findImage(service_.projection(), *caller_, context.getParams().getName());
      if (!image.ok()) return image.error();
      auto plan = exportPlan(**image, {});
      if (!plan.ok()) return plan.error();
      const std::string digest = context.getParams().getDigest();
      if (!plan->blobs.count(digest))
        return Error{"E_NOT_FOUND", "image " + (*image)->name + " has no blob " + digest};
      std::ifstream in(service_.blobs()->pathOf(digest), std::ios::binary);
      if (!in) return Error{"E_NOT_FOUND", "blob " + digest + " is missing from the store"};
      const uint32_t length = std::min<uint32_t>(context.getParams().getLength(), 4u << 20);
      std::string data(length, '\0');
      in.seekg(static_cast<std::streamoff>(context.getParams().getOffset()));
      in.read(data.data(), length);
      data.resize(static_cast<size_t>(std::max<std::streamsize>(in.gcount(), 0)));
      context.getResults().setData(
          kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
      return Ok{};
    });
  }

  kj::Promise<void> getSbom(GetSbomContext context) override {
    return handle("getSbom", context, [&]() -> Status {
      auto image =
          domain::findImage(service_.projection(), *caller_, context.getParams().getName());
      if (!image.ok()) return image.error();
      const domain::BuildState* ok = (*image)->latestSuccessfulBuild();
      if (!ok || !service_.blobs())
        return Error{"E_NOT_FOUND", (*image)->name + " has no built line"};
      std::string wanted = context.getParams().getLine();
      if (wanted.empty()) {
        const auto tags = (*image)->tags();
        if (auto it = tags.find("latest"); it != tags.end()) {
          for (const LineState& l : ok->lines) {
            if (l.version == it->second && l.status == LineStatus::kBuilt) wanted = l.line;
          }
        }
      }
      for (const LineState& l : ok->lines) {
        if (l.line != wanted || l.status != LineStatus::kBuilt) continue;
        if (l.sbomDigest().empty()) return Error{"E_NOT_FOUND", "line " + wanted + " has no SBOM"};
        auto spdx = service_.blobs()->read(l.sbomDigest().str());
        if (!spdx.ok()) return spdx.error();
        context.getResults().setLine(domain::cstr(l.line));
        context.getResults().setVersion(domain::cstr(l.version));
        context.getResults().setSpdx(*spdx);
        return Ok{};
      }
      return Error{"E_NOT_FOUND", (*image)->name + " has no built line " + wanted};
    });
  }

  kj::Promise<void> tagHistory(TagHistoryContext context) override {
    return handle("tagHistory", context, [&]() -> Status {
      auto image =
          domain::findImage(service_.projection(), *caller_, context.getParams().getName());
      if (!image.ok()) return image.error();
      const std::string tag = context.getParams().getTag();
      auto txn = service_.log().read();
      if (!txn.ok()) return txn.error();
      // Replay the image's own stream and watch the tag after each event.
      struct Move {
        int64_t time;
        uint64_t sequence;
        std::string fromVersion, fromDigest, toVersion, toDigest;
        uint64_t buildId;
        std::string reason;
      };
      std::vector<Move> moves;
      domain::Projection replay;
      std::string version, digest;
      const std::string stream = (*image)->streamId;
      auto s = (*txn)->forEachInStream(stream, 1, [&](const store::EventRef& e) {
        capnp::FlatArrayMessageReader reader(e.words());
        auto ev = reader.getRoot<schema::Event>();
        replay.apply(ev);
        const ImageState* now = replay.byStream(stream);
        if (!now) return true;
        const auto tags = now->tags();
        std::string v, d;
        if (auto it = tags.find(tag); it != tags.end()) {
          v = it->second;
          if (const auto* ok = now->latestSuccessfulBuild()) {
            for (const LineState& l : ok->lines) {
              if (l.status == LineStatus::kBuilt && l.version == v) d = l.digest().str();
            }
          }
        }
        if (v != version || d != digest) {
          const auto* ok = now->latestSuccessfulBuild();
          moves.push_back({ev.getTime(), ev.getSequence(), version, digest, v, d, ok ? ok->id : 0,
                           ok ? domain::toString(ok->reason) : ""});
          version = v;
          digest = d;
        }
        return true;
      });
      if (!s.ok()) return s.error();
      auto list = context.getResults().initMoves(moves.size());
      for (size_t i = 0; i < moves.size(); ++i) {
        list[i].setTime(formatTime(moves[i].time));
        list[i].setSequence(moves[i].sequence);
        list[i].setFromVersion(moves[i].fromVersion);
        list[i].setFromDigest(moves[i].fromDigest);
        list[i].setToVersion(moves[i].toVersion);
        list[i].setToDigest(moves[i].toDigest);
        list[i].setBuildId(moves[i].buildId);
        list[i].setReason(moves[i].reason);
      }
      return Ok{};
    });
  }

 private:
  struct ExportTag {
    std::string tag, version, digest;
  };
  struct ExportPlan {
    std::vector<ExportTag> tags;
    std::map<std::string, image::Descriptor> blobs;  // by digest
  };

  // The tags to export (those asked for, or all) and every blob their manifests reference.
  Result<ExportPlan> exportPlan(const ImageState& image, const std::vector<std::string>& wanted) {
    const auto blobs = service_.blobs();
    if (!blobs) return Error{"E_NOT_FOUND", "this daemon writes no images"};
    const domain::BuildState* ok = image.latestSuccessfulBuild();
    if (!ok) return Error{"E_NOT_FOUND", image.name + " has no successful build to export"};
    const auto tags = image.tags();
    ExportPlan plan;
    auto digestOf = [&](const std::string& version) -> std::string {
      for (const LineState& l : ok->lines) {
        if (l.status == LineStatus::kBuilt && l.version == version) return l.digest().str();
      }
      return "";
    };
    for (const auto& [tag, version] : tags) {
      if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), tag) == wanted.end()) continue;
      const std::string digest = digestOf(version);
      if (digest.empty()) return Error{"E_NOT_FOUND", "tag " + tag + " has no image written"};
      plan.tags.push_back({tag, version, digest});
    }
    for (const auto& w : wanted) {
      if (!tags.count(w)) return Error{"E_NOT_FOUND", image.name + " has no tag " + w};
    }
    for (const ExportTag& t : plan.tags) {
      if (plan.blobs.count(t.digest)) continue;
      auto manifest = blobs->read(t.digest);
      if (!manifest.ok()) return manifest.error();
      plan.blobs[t.digest] = {image::kManifestMediaType, t.digest, manifest->size()};
      auto m = nlohmann::json::parse(*manifest, nullptr, false);
      if (m.is_discarded())
        return Error{"E_STORE_CORRUPT", "manifest " + t.digest + " is not JSON"};
      auto add = [&](const nlohmann::json& d) {
        plan.blobs[d["digest"]] = {d["mediaType"], d["digest"], d["size"].get<uint64_t>()};
      };
      add(m["config"]);
      for (const auto& l : m["layers"]) add(l);
    }
    return plan;
  }

  void fillCatalog(api::CatalogInfo::Builder b, const catalog::Catalog& c) {
    b.setDigest(c.digest());
    b.setSource(service_.projection().catalog().source);
    b.setStarters(static_cast<uint32_t>(c.starters().size()));
    b.setPackages(static_cast<uint32_t>(c.packageCount()));
    auto problems = b.initProblems(c.problems().size());
    for (size_t i = 0; i < c.problems().size(); ++i) {
      const auto& p = c.problems()[i];
      problems.set(i, p.file + (p.line ? ":" + std::to_string(p.line) : "") + ": " + p.message);
    }
  }

  template <typename Context>
  void fillCurrent(Context& context) {
    auto image = domain::findImage(service_.projection(), *caller_, context.getParams().getName());
    if (image.ok()) fillImage(context.getResults().initImage(), **image, false);
  }

  Error unmapped() const {
    return Error{"E_PERMISSION_DENIED", "uid " + std::to_string(uid_) +
                                            " is not mapped to a tenant in the daemon's config"};
  }
  Error denied(const std::string& what) const {
    return Error{"E_PERMISSION_DENIED", what + " is reserved to the daemon's own uid"};
  }

  void logCall(const char* method, std::chrono::steady_clock::time_point start,
               const std::string& code) {
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    logger_->info("request tenant={} uid={} method={} outcome={} ms={:.3f}",
                  caller_ ? caller_->tenant : "-", uid_, method, code.empty() ? "ok" : code, ms);
  }

  // A synchronous call: `fn` fills the results or returns the expected failure.
  template <typename Context, typename Fn>
  kj::Promise<void> handle(const char* method, Context& context, Fn&& fn) {
    const auto start = std::chrono::steady_clock::now();
    Status s = caller_ ? fn() : Status(unmapped());
    if (!s.ok()) setError(context.getResults(), s.error());
    logCall(method, start, s.ok() ? "" : s.error().code);
    return kj::READY_NOW;
  }

  // A write: `plan` makes the append; `fill` fills the results once it is durable and applied.
  template <typename Context, typename Plan, typename Fill>
  kj::Promise<void> write(const char* method, Context& context, Plan&& plan, Fill&& fill) {
    const auto start = std::chrono::steady_clock::now();
    if (!caller_) {
      setError(context.getResults(), unmapped());
      logCall(method, start, "E_PERMISSION_DENIED");
      return kj::READY_NOW;
    }
    // A request without an expected version means "whatever the image's version is": when
    // other events of the image (its build's progress, above all) land between the plan and
    // the append, the store refuses the plan's version, and the request is planned again on
    // the newer state instead of failing with a conflict the caller never asked for.
    bool callerExpects = false;
    if constexpr (requires { context.getParams().getExpectedVersion(); }) {
      callerExpects = context.getParams().getExpectedVersion() != 0;
    }
    using Appended = std::shared_ptr<Result<store::AppendResult>>;  // see reloadCatalog
    auto paf = kj::newPromiseAndFulfiller<Appended>();
    auto fulfiller =
        std::make_shared<kj::Own<kj::PromiseFulfiller<Appended>>>(kj::mv(paf.fulfiller));
    service_.executeLatest(
        kj::fwd<Plan>(plan),
        [fulfiller](Result<store::AppendResult> r) {
          (*fulfiller)->fulfill(std::make_shared<Result<store::AppendResult>>(std::move(r)));
        },
        callerExpects ? 0 : Service::kReplans);
    return paf.promise.then(
        [this, context, method, start, fill = kj::fwd<Fill>(fill)](Appended r) mutable {
          if (r->ok()) {
            fill(**r);
          } else {
            setError(context.getResults(), r->error());
          }
          logCall(method, start, r->ok() ? "" : r->error().code);
        });
  }

  Service& service_;
  std::optional<domain::Caller> caller_;
  bool admin_;
  std::shared_ptr<spdlog::logger> logger_;
  uid_t uid_;
};

}  // namespace

// One accepted connection: its stream, its RPC system, and who is on the other end.
struct Listener::Connection {
  uint64_t id;
  kj::Own<AsioStream> stream;
  kj::Own<capnp::TwoPartyVatNetwork> network;
  kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc;
  kj::Promise<void> disconnected = nullptr;
};

Listener::Listener(asio::io_context& io, Service& service, Access access,
                   std::shared_ptr<spdlog::logger> logger)
    : io_(io), service_(service), access_(std::move(access)), logger_(std::move(logger)) {}

Listener::~Listener() {
  stopAccepting();
  closeAll();
}

Status Listener::listen(const std::string& path, std::optional<gid_t> group) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Error{"E_INVALID_ARGUMENT", "socket path is longer than " +
                                           std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
                                           " bytes: " + path};
  }
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (fs::exists(fs::symlink_status(path, ec))) {
    // A live daemon answers; a stale socket file does not.
    asio::local::stream_protocol::socket probe(io_);
    boost::system::error_code connectError;
    probe.connect(asio::local::stream_protocol::endpoint(path), connectError);
    if (!connectError) {
      return Error{"E_ALREADY_RUNNING", "another imaged is serving " + path};
    }
    if (!fs::is_socket(fs::symlink_status(path, ec))) {
      return Error{"E_INVALID_ARGUMENT", path + " exists and is not a socket; not replacing it"};
    }
    fs::remove(path, ec);
    logger_->info("removed stale socket {}", path);
  }
  // Created with the final mode: no window in which others could connect.
  const mode_t mode = group ? 0660 : 0600;
  const mode_t old = ::umask(0777 & ~mode);
  acceptor_.emplace(io_);
  boost::system::error_code bindError;
  acceptor_->open(asio::local::stream_protocol(), bindError);
  if (!bindError) acceptor_->bind(asio::local::stream_protocol::endpoint(path), bindError);
  ::umask(old);
  if (!bindError) acceptor_->listen(asio::socket_base::max_listen_connections, bindError);
  if (bindError) {
    acceptor_.reset();
    return Error{"E_STORAGE", "cannot listen on " + path + ": " + bindError.message()};
  }
  if (group && ::chown(path.c_str(), static_cast<uid_t>(-1), *group) != 0) {
    return Error{"E_PERMISSION_DENIED",
                 "cannot give " + path + " to group " + std::to_string(*group)};
  }
  path_ = path;
  accept();
  return Ok{};
}

void Listener::accept() {
  acceptor_->async_accept(
      [this](const boost::system::error_code& ec, asio::local::stream_protocol::socket socket) {
        if (ec == asio::error::operation_aborted || !acceptor_) return;
        if (!ec) onAccepted(std::move(socket));
        accept();
      });
}

void Listener::onAccepted(asio::local::stream_protocol::socket socket) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    logger_->warn("no peer credentials on a new connection; closing it");
    return;
  }
  std::optional<domain::Caller> caller;
  const bool admin = cred.uid == access_.ownUid;
  if (admin) {
    caller = domain::Caller{access_.ownTenant, cred.uid, "rpc"};
  } else if (auto it = access_.tenants.find(cred.uid); it != access_.tenants.end()) {
    caller = domain::Caller{it->second, cred.uid, "rpc"};
  }

  auto conn = std::make_unique<Connection>();
  conn->id = nextId_++;
  conn->stream = kj::heap<AsioStream>(std::move(socket));
  capnp::ReaderOptions limits;
  limits.traversalLimitInWords = kTraversalLimitWords;
  limits.nestingLimit = kNestingLimit;
  conn->network = kj::heap<capnp::TwoPartyVatNetwork>(*conn->stream,
                                                      capnp::rpc::twoparty::Side::SERVER, limits);
  capnp::Capability::Client bootstrap =
      kj::heap<ImagedImpl>(service_, caller, admin, logger_, cred.uid);
  conn->rpc = kj::heap<capnp::RpcSystem<capnp::rpc::twoparty::VatId>>(
      capnp::makeRpcServer(*conn->network, kj::mv(bootstrap)));
  const uint64_t id = conn->id;
  conn->disconnected = conn->network->onDisconnect()
                           .then([this, id] {
                             // Not from inside the connection's own callbacks: later, from Asio.
                             asio::post(io_, [this, id] {
                               connections_.remove_if([id](const auto& c) { return c->id == id; });
                             });
                           })
                           .eagerlyEvaluate([](kj::Exception&&) {});
  logger_->debug("connection {} from uid {} pid {} ({})", id, cred.uid, cred.pid,
                 caller ? caller->tenant : "unmapped");
  connections_.push_back(std::move(conn));
}

void Listener::stopAccepting() {
  if (!acceptor_) return;
  boost::system::error_code ignored;
  acceptor_->close(ignored);
  acceptor_.reset();
  if (!path_.empty()) {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
}

void Listener::closeAll() {
  connections_.clear();
}

}  // namespace imaged::rpc
