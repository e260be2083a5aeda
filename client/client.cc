#include "client/client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <capnp/ez-rpc.h>
#include <kj/async-io.h>
#include <kj/debug.h>

#include <openssl/evp.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "common/sha256.h"
#include "schema/api.capnp.h"
#include "schema/lists.h"

namespace imaged::client {
namespace {

using schema_lists::envOf;
using schema_lists::setEnv;
using schema_lists::setTexts;
using schema_lists::texts;

std::optional<Error> errorOf(api::Error::Reader e, bool has) {
  if (!has) return std::nullopt;
  return Error{e.getCode(), e.getMessage()};
}

Line toLine(api::LineResult::Reader r) {
  return {r.getLine(), r.getVersion(), r.getStatus(), texts(r.getPackages()),
          r.getCode(), r.getReason(),  r.getDigest()};
}

Image toImage(api::Image::Reader r) {
  Image i;
  i.name = r.getName();
  i.fullName = r.getFullName();
  i.tenant = r.getTenant();
  i.description = r.getDescription();
  i.starter = r.getStarter();
  i.status = r.getStatus();
  i.createdAt = r.getCreatedAt();
  i.packages = texts(r.getPackages());
  i.env = envOf<EnvVar>(r.getEnv());
  i.version = r.getVersion();
  for (auto l : r.getLines()) i.lines.push_back(toLine(l));
  for (auto t : r.getTags()) i.tags.push_back({t.getTag(), t.getVersion(), t.getDigest()});
  i.error = errorOf(r.getError(), r.hasError());
  for (auto b : r.getBuilds()) {
    Build build{b.getId(),
                b.getNumber(),
                b.getReason(),
                b.getStatus(),
                b.getRequestedAt(),
                b.getEndedAt(),
                b.getCatalogDigest(),
                {},
                errorOf(b.getError(), b.hasError())};
    for (auto l : b.getLines()) build.lines.push_back(toLine(l));
    i.builds.push_back(std::move(build));
  }
  return i;
}

CatalogInfo toCatalog(api::CatalogInfo::Reader r) {
  return {r.getDigest(), r.getSource(), r.getStarters(), r.getPackages(), texts(r.getProblems())};
}

void fillSpec(api::ImageSpec::Builder b, const ImageSpec& s) {
  b.setName(s.name);
  b.setDescription(s.description);
  b.setStarter(s.starter);
  setTexts(b.initPackages(s.packages.size()), s.packages);
  setEnv(b.initEnv(s.env.size()), s.env);
}

constexpr const char* kTimedOut = "imaged-client: call timed out";

class WatcherImpl final : public api::BuildWatcher::Server {
 public:
  using Ended = std::shared_ptr<Image>;
  WatcherImpl(std::function<void(const Line&)> onLine, kj::Own<kj::PromiseFulfiller<Ended>> done)
      : onLine_(std::move(onLine)), done_(kj::mv(done)) {}

  kj::Promise<void> line(LineContext context) override {
    if (onLine_) onLine_(toLine(context.getParams().getResult()));
    return kj::READY_NOW;
  }
  kj::Promise<void> ended(EndedContext context) override {
    done_->fulfill(std::make_shared<Image>(toImage(context.getParams().getImage())));
    return kj::READY_NOW;
  }

 private:
  std::function<void(const Line&)> onLine_;
  kj::Own<kj::PromiseFulfiller<Ended>> done_;
};

class SubscriberImpl final : public api::EventSubscriber::Server {
 public:
  using Done = std::shared_ptr<bool>;
  SubscriberImpl(std::function<bool(const std::vector<std::string>&)> onEvents,
                 kj::Own<kj::PromiseFulfiller<Done>> done)
      : onEvents_(std::move(onEvents)), done_(kj::mv(done)) {}

  kj::Promise<void> events(EventsContext context) override {
    if (finished_) return kj::READY_NOW;
    std::vector<std::string> batch;
    for (auto d : context.getParams().getEvents()) {
      batch.emplace_back(reinterpret_cast<const char*>(d.begin()), d.size());
    }
    if (!onEvents_(batch)) {
      finished_ = true;
      done_->fulfill(std::make_shared<bool>(true));
    }
    return kj::READY_NOW;
  }

 private:
  std::function<bool(const std::vector<std::string>&)> onEvents_;
  kj::Own<kj::PromiseFulfiller<Done>> done_;
  bool finished_ = false;
};

}  // namespace

struct Client::Impl {
  std::string path;
  std::chrono::milliseconds timeout;
  kj::Own<capnp::EzRpcClient> rpc;
  api::Imaged::Client imaged = nullptr;

  // Waits for a promise within the call timeout; maps a broken connection to E_UNAVAILABLE.
  template <typename T, typename Fn>
  auto call(kj::Promise<T> promise, std::chrono::milliseconds limit, Fn&& convert)
      -> decltype(convert(std::declval<T&>()));

  template <typename Response, typename Fn>
  auto run(kj::Promise<Response> promise, Fn&& convert) {
    return call(kj::mv(promise), timeout, kj::fwd<Fn>(convert));
  }

  // Sends a request that returns a Handle (watch, subscribe), keeps the handle while it waits
  // up to `limit` for `done` (dropping the handle would end what it started), converts.
  template <typename Response, typename T, typename Fn>
  auto follow(kj::Promise<Response> started, kj::Promise<T> done, std::chrono::milliseconds limit,
              Fn&& convert) -> decltype(convert(std::declval<T&>())) {
    auto handle = run(kj::mv(started), [](auto& r) -> Result<std::shared_ptr<api::Handle::Client>> {
      if (r.hasError()) return Error{r.getError().getCode(), r.getError().getMessage()};
      return std::make_shared<api::Handle::Client>(r.getHandle());
    });
    if (!handle.ok()) return handle.error();
    return call(kj::mv(done), limit, kj::fwd<Fn>(convert));
  }
};

template <typename T, typename Fn>
auto Client::Impl::call(kj::Promise<T> promise, std::chrono::milliseconds limit, Fn&& convert)
    -> decltype(convert(std::declval<T&>())) {
  auto& timer = rpc->getIoProvider().getTimer();
  auto& ws = rpc->getWaitScope();
  try {
    auto timed =
        promise.exclusiveJoin(timer.afterDelay(limit.count() * kj::MILLISECONDS).then([]() -> T {
          KJ_FAIL_ASSERT(kTimedOut);
        }));
    T response = timed.wait(ws);
    return convert(response);
  } catch (const kj::Exception& e) {
    if (std::string(e.getDescription().cStr()).find(kTimedOut) != std::string::npos) {
      return Error{"E_TIMEOUT",
                   "imaged did not answer within " + std::to_string(limit.count() / 1000) + " s"};
    }
    return Error{"E_UNAVAILABLE", "lost the connection to imaged at " + path + ": " +
                                      std::string(e.getDescription().cStr())};
  }
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

std::string Client::defaultSocket() {
  if (const char* env = std::getenv("IMAGED_SOCKET"); env && *env) return env;
  if (::geteuid() == 0) return "/run/imaged/imaged.sock";
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg && *xdg)
    return std::string(xdg) + "/imaged.sock";
  return "/tmp/imaged-" + std::to_string(::geteuid()) + ".sock";
}

std::string Client::newIdempotencyKey() {
  std::random_device rd;
  std::uniform_int_distribution<int> hex(0, 15);
  std::string key;
  for (int i = 0; i < 32; ++i) key += "0123456789abcdef"[hex(rd)];
  return key;
}

Result<std::unique_ptr<Client>> Client::connect(const std::string& socketPath,
                                                std::chrono::milliseconds timeout) {
  const std::string path = socketPath.empty() ? defaultSocket() : socketPath;
  // A plain connect first: a clear message when no daemon is there, before any RPC.
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path)
    return Error{"E_UNAVAILABLE", "socket path too long: " + path};
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error{"E_UNAVAILABLE", std::string("socket: ") + std::strerror(errno)};
  const int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  const int err = errno;
  if (rc != 0) {
    ::close(fd);
    std::string why = err == ENOENT         ? "no socket there (is imaged running?)"
                      : err == ECONNREFUSED ? "nothing listening (is imaged running?)"
                      : err == EACCES       ? "permission denied on the socket"
                                            : std::strerror(err);
    return Error{"E_UNAVAILABLE", "cannot reach imaged at " + path + ": " + why};
  }
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->timeout = timeout;
  try {
    impl->rpc = kj::heap<capnp::EzRpcClient>(fd);
    impl->imaged = impl->rpc->getMain<api::Imaged>();
  } catch (const kj::Exception& e) {
    return Error{"E_UNAVAILABLE",
                 "cannot reach imaged at " + path + ": " + std::string(e.getDescription().cStr())};
  }
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

#define IMAGED_RETURN_IF_ERROR(results)                                          \
  if (results.hasError()) {                                                      \
    return Error{results.getError().getCode(), results.getError().getMessage()}; \
  }

Result<std::vector<StarterSummary>> Client::starters() {
  auto req = impl_->imaged.listStartersRequest();
  return impl_->run(req.send(), [](auto& r) -> Result<std::vector<StarterSummary>> {
    IMAGED_RETURN_IF_ERROR(r);
    std::vector<StarterSummary> out;
    for (auto s : r.getStarters())
      out.push_back({s.getName(), s.getDescription(), texts(s.getLines())});
    return out;
  });
}

Result<Starter> Client::starter(const std::string& name) {
  auto req = impl_->imaged.getStarterRequest();
  req.setName(name);
  return impl_->run(req.send(), [](auto& r) -> Result<Starter> {
    IMAGED_RETURN_IF_ERROR(r);
    auto s = r.getStarter();
    Starter out{s.getName(),
                s.getDescription(),
                s.getUser(),
                s.getWorkdir(),
                envOf<EnvVar>(s.getEnvironment()),
                texts(s.getEntrypoint()),
                texts(s.getCmd()),
                {}};
    for (auto l : s.getLines()) {
      StarterLine line{
          l.getLine(), l.getProduction(),     l.getMaintained(), envOf<EnvVar>(l.getEnvironment()),
          {},          texts(l.getLicenses())};
      for (auto v : l.getVersions())
        line.versions.push_back({v.getVersion(), v.getPublished(), texts(v.getPackages())});
      out.lines.push_back(std::move(line));
    }
    return out;
  });
}

Result<std::vector<PackageHit>> Client::search(const std::string& query, uint32_t limit) {
  auto req = impl_->imaged.searchPackagesRequest();
  req.setQuery(query);
  req.setLimit(limit);
  return impl_->run(req.send(), [](auto& r) -> Result<std::vector<PackageHit>> {
    IMAGED_RETURN_IF_ERROR(r);
    std::vector<PackageHit> out;
    for (auto h : r.getHits())
      out.push_back({h.getName(), h.getVersion(), h.getDescription(), texts(h.getVersions())});
    return out;
  });
}

Result<std::vector<Line>> Client::preview(const ImageSpec& spec) {
  auto req = impl_->imaged.previewRequest();
  fillSpec(req.initSpec(), spec);
  return impl_->run(req.send(), [](auto& r) -> Result<std::vector<Line>> {
    IMAGED_RETURN_IF_ERROR(r);
    std::vector<Line> out;
    for (auto l : r.getLines()) out.push_back(toLine(l));
    return out;
  });
}

Result<Image> Client::create(const ImageSpec& spec, const std::string& idempotencyKey) {
  auto req = impl_->imaged.createImageRequest();
  fillSpec(req.initSpec(), spec);
  req.setIdempotencyKey(idempotencyKey.empty() ? newIdempotencyKey() : idempotencyKey);
  return impl_->run(req.send(), [](auto& r) -> Result<Image> {
    IMAGED_RETURN_IF_ERROR(r);
    return toImage(r.getImage());
  });
}

Result<Image> Client::get(const std::string& name, const std::string& atTime) {
  auto req = impl_->imaged.getImageRequest();
  req.setName(name);
  req.setAtTime(atTime);
  return impl_->run(req.send(), [](auto& r) -> Result<Image> {
    IMAGED_RETURN_IF_ERROR(r);
    return toImage(r.getImage());
  });
}

Result<std::vector<Image>> Client::list() {
  auto req = impl_->imaged.listImagesRequest();
  return impl_->run(req.send(), [](auto& r) -> Result<std::vector<Image>> {
    IMAGED_RETURN_IF_ERROR(r);
    std::vector<Image> out;
    for (auto i : r.getImages()) out.push_back(toImage(i));
    return out;
  });
}

Result<Image> Client::edit(const std::string& name, const ImageEdit& edit,
                           uint64_t expectedVersion) {
  auto req = impl_->imaged.editImageRequest();
  req.setName(name);
  req.setExpectedVersion(expectedVersion);
  auto e = req.initEdit();
  setTexts(e.initAddPackages(edit.addPackages.size()), edit.addPackages);
  setTexts(e.initRemovePackages(edit.removePackages.size()), edit.removePackages);
  setEnv(e.initSetEnv(edit.setEnv.size()), edit.setEnv);
  setTexts(e.initUnsetEnv(edit.unsetEnv.size()), edit.unsetEnv);
  if (edit.description) {
    e.setDescription(*edit.description);
    e.setHasDescription(true);
  }
  if (edit.starter) e.setStarter(*edit.starter);
  if (edit.name) e.setName(*edit.name);
  return impl_->run(req.send(), [](auto& r) -> Result<Image> {
    IMAGED_RETURN_IF_ERROR(r);
    return toImage(r.getImage());
  });
}

Result<Image> Client::rebuild(const std::string& name, uint64_t expectedVersion) {
  auto req = impl_->imaged.rebuildImageRequest();
  req.setName(name);
  req.setExpectedVersion(expectedVersion);
  return impl_->run(req.send(), [](auto& r) -> Result<Image> {
    IMAGED_RETURN_IF_ERROR(r);
    return toImage(r.getImage());
  });
}

Status Client::remove(const std::string& name, uint64_t expectedVersion) {
  auto req = impl_->imaged.deleteImageRequest();
  req.setName(name);
  req.setExpectedVersion(expectedVersion);
  return impl_->run(req.send(), [](auto& r) -> Status {
    IMAGED_RETURN_IF_ERROR(r);
    return Ok{};
  });
}

Result<std::vector<HistoryEntry>> Client::history(const std::string& name) {
  auto req = impl_->imaged.historyRequest();
  req.setName(name);
  return impl_->run(req.send(), [](auto& r) -> Result<std::vector<HistoryEntry>> {
    IMAGED_RETURN_IF_ERROR(r);
    std::vector<HistoryEntry> out;
    for (auto e : r.getEntries()) {
      out.push_back({e.getSequence(), e.getVersion(), e.getTime(), e.getKind(), e.getSummary(),
                     e.getActor()});
    }
    return out;
  });
}

Result<std::vector<TagMove>> Client::tagHistory(const std::string& name, const std::string& tag) {
  auto req = impl_->imaged.tagHistoryRequest();
  req.setName(name);
  req.setTag(tag);
  return impl_->run(req.send(), [](auto& r) -> Result<std::vector<TagMove>> {
    IMAGED_RETURN_IF_ERROR(r);
    std::vector<TagMove> out;
    for (auto m : r.getMoves()) {
      out.push_back({m.getTime(), m.getSequence(), m.getFromVersion(), m.getFromDigest(),
                     m.getToVersion(), m.getToDigest(), m.getBuildId(), m.getReason()});
    }
    return out;
  });
}

Result<Image> Client::watch(const std::string& name, const std::function<void(const Line&)>& onLine,
                            std::chrono::milliseconds timeout) {
  auto paf = kj::newPromiseAndFulfiller<WatcherImpl::Ended>();
  auto req = impl_->imaged.watchRequest();
  req.setName(name);
  req.setWatcher(kj::heap<WatcherImpl>(onLine, kj::mv(paf.fulfiller)));
  return impl_->follow(req.send(), kj::mv(paf.promise), timeout,
                       [](WatcherImpl::Ended& image) -> Result<Image> { return *image; });
}

Result<std::vector<std::string>> Client::readEvents(uint64_t from, uint32_t limit) {
  auto req = impl_->imaged.readEventsRequest();
  req.setFrom(from);
  req.setLimit(limit);
  return impl_->run(req.send(), [](auto& r) -> Result<std::vector<std::string>> {
    IMAGED_RETURN_IF_ERROR(r);
    std::vector<std::string> out;
    for (auto d : r.getEvents())
      out.emplace_back(reinterpret_cast<const char*>(d.begin()), d.size());
    return out;
  });
}

Status Client::subscribe(uint64_t from,
                         const std::function<bool(const std::vector<std::string>&)>& onEvents,
                         std::chrono::milliseconds timeout) {
  auto paf = kj::newPromiseAndFulfiller<SubscriberImpl::Done>();
  auto req = impl_->imaged.subscribeRequest();
  req.setFrom(from);
  req.setSubscriber(kj::heap<SubscriberImpl>(onEvents, kj::mv(paf.fulfiller)));
  return impl_->follow(req.send(), kj::mv(paf.promise), timeout,
                       [](SubscriberImpl::Done&) -> Status { return Ok{}; });
}

Result<std::vector<Tag>> Client::exportImage(const std::string& name, const std::string& dir,
                                             const std::vector<std::string>& tags) {
  auto req = impl_->imaged.exportImageRequest();
  req.setName(name);
  setTexts(req.initTags(tags.size()), tags);
  struct Plan {
    std::vector<Tag> tags;
    std::vector<std::pair<std::string, uint64_t>> blobs;  // digest, size
    std::map<std::string, std::string> mediaTypes;
  };
  auto plan = impl_->run(req.send(), [](auto& r) -> Result<Plan> {
    IMAGED_RETURN_IF_ERROR(r);
    Plan p;
    for (auto t : r.getManifests()) p.tags.push_back({t.getTag(), t.getVersion(), t.getDigest()});
    for (auto b : r.getBlobs()) {
      p.blobs.emplace_back(b.getDigest(), b.getSize());
      p.mediaTypes[b.getDigest()] = b.getMediaType();
    }
    return p;
  });
  if (!plan.ok()) return plan.error();
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir + "/blobs/sha256", ec);
  if (ec) return Error{"E_INVALID_ARGUMENT", "cannot create " + dir + ": " + ec.message()};
  for (const auto& [digest, size] : plan->blobs) {
    if (digest.rfind("sha256:", 0) != 0 || digest.size() != 71 ||
        digest.find_first_not_of("0123456789abcdef", 7) != std::string::npos) {
      return Error{"E_INVALID_ARGUMENT", "the daemon named a bad digest " + digest};
    }
    std::string data;
    while (data.size() < size) {
      auto piece = impl_->imaged.readBlobRequest();
      piece.setName(name);
      piece.setDigest(digest);
      piece.setOffset(data.size());
      piece.setLength(static_cast<uint32_t>(std::min<uint64_t>(size - data.size(), 4u << 20)));
      auto chunk = impl_->run(piece.send(), [](auto& r) -> Result<std::string> {
        IMAGED_RETURN_IF_ERROR(r);
        return std::string(reinterpret_cast<const char*>(r.getData().begin()), r.getData().size());
      });
      if (!chunk.ok()) return chunk.error();
      if (chunk->empty()) return Error{"E_UNAVAILABLE", "blob " + digest + " ended early"};
      data += *chunk;
    }
    const std::string hexDigest = sha256Digest(data);
    if (hexDigest != digest) return Error{"E_UNAVAILABLE", "blob " + digest + " arrived damaged"};
    std::ofstream out(dir + "/blobs/sha256/" + digest.substr(7),
                      std::ios::binary | std::ios::trunc);
    out << data;
    if (!out) return Error{"E_INVALID_ARGUMENT", "cannot write into " + dir};
  }
  nlohmann::json manifests = nlohmann::json::array();
  for (const Tag& t : plan->tags) {
    uint64_t size = 0;
    for (const auto& [d, s] : plan->blobs) {
      if (d == t.digest) size = s;
    }
    manifests.push_back({{"mediaType", plan->mediaTypes[t.digest]},
                         {"digest", t.digest},
                         {"size", size},
                         {"annotations", {{"org.opencontainers.image.ref.name", t.tag}}}});
  }
  std::ofstream(dir + "/oci-layout") << R"({"imageLayoutVersion":"1.0.0"})";
  std::ofstream(dir + "/index.json")
      << nlohmann::json{{"schemaVersion", 2}, {"manifests", manifests}}.dump();
  return plan->tags;
}

Result<Client::Sbom> Client::sbom(const std::string& name, const std::string& line) {
  auto req = impl_->imaged.getSbomRequest();
  req.setName(name);
  req.setLine(line);
  return impl_->run(req.send(), [](auto& r) -> Result<Sbom> {
    IMAGED_RETURN_IF_ERROR(r);
    return Sbom{r.getLine(), r.getVersion(), r.getSpdx()};
  });
}

Result<CatalogInfo> Client::reloadCatalog() {
  auto req = impl_->imaged.reloadCatalogRequest();
  return impl_->run(req.send(), [](auto& r) -> Result<CatalogInfo> {
    IMAGED_RETURN_IF_ERROR(r);
    return toCatalog(r.getCatalog());
  });
}

Result<CatalogInfo> Client::catalogInfo() {
  auto req = impl_->imaged.catalogInfoRequest();
  return impl_->run(req.send(), [](auto& r) -> Result<CatalogInfo> {
    IMAGED_RETURN_IF_ERROR(r);
    return toCatalog(r.getCatalog());
  });
}

}  // namespace imaged::client
