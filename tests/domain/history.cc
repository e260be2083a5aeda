#include "tests/domain/history.h"

#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <sstream>

#include "daemon/domain/events.h"

namespace imaged::testing {

namespace ev = domain::events;
using schema::BuildReason;

const std::vector<std::string>& History::streams() {
  static const std::vector<std::string> all = {"image/acme/web/1", "image/acme/api/1",
                                               "image/acme/api/2", "image/globex/web/1"};
  return all;
}

uint64_t History::append(const std::string& stream, std::vector<kj::Array<capnp::word>> payloads,
                         const std::string& idempotencyKey) {
  store::AppendRequest r;
  r.streamId = stream;
  r.idempotencyKey = idempotencyKey;
  r.payloads = std::move(payloads);
  auto res = log_->append(std::move(r));
  EXPECT_TRUE(res.ok()) << res.error().message;
  return res->firstSequence;
}

namespace {

template <typename... P>
std::vector<kj::Array<capnp::word>> batch(P... p) {
  std::vector<kj::Array<capnp::word>> v;
  (v.push_back(std::move(p)), ...);
  return v;
}

}  // namespace

History::History(const std::string& dir, int variant) {
  store::EventLog::Options o;
  o.path = dir;
  log_ = std::move(store::EventLog::open(o)).value();
  const std::vector<catalog::BuiltLine> lines = {{"3.13", "3.13.1"}, {"3.12", "3.12.8"}};
  const std::vector<ev::ResolvedPackage> flask = {{"python-3.13", "3.13.1-r0"},
                                                  {"py3.13-flask", "3.1.0-r0"}};
  const std::vector<ev::ResolvedPackage> flask12 = {{"python-3.12", "3.12.8-r0"},
                                                    {"py3.12-flask", "3.1.0-r0"}};
  append("catalog", batch(ev::catalogLoaded("sha256:c1", "/cat", {{"python", lines}})));

  // acme/web: created (3.12 skipped), then an edit supersedes the running rebuild.
  uint64_t s = append("image/acme/web/1",
                      batch(ev::imageCreated("acme", "web", "the web", "python", {"py3-flask"},
                                             {{"MODE", variant ? "y" : "x"}}),
                            ev::buildRequested(BuildReason::CREATED, "sha256:c1")),
                      "create/acme/k1");
  uint64_t b = s + 1;
  append("image/acme/web/1",
         batch(ev::buildStarted(b, "sha256:c1", lines),
               ev::lineBuilt(b, "3.13", "3.13.1", flask, "sha256:m1", "sha256:s1"),
               ev::lineSkipped(b, "3.12", "3.12.8", "E_PACKAGE_CONFLICT", "a reason"),
               ev::buildSucceeded(b)));
  b = append("image/acme/web/1", batch(ev::buildRequested(BuildReason::REBUILD, "sha256:c1")));
  append("image/acme/web/1",
         batch(ev::buildStarted(b, "sha256:c1", lines),
               ev::lineBuilt(b, "3.13", "3.13.1", flask, "sha256:m2", "sha256:s2")));
  s = append("image/acme/web/1", batch(ev::imageEdited("edited", {"py3-flask", "py3-requests"},
                                                       {{"MODE", "z"}, {"TZ", "UTC"}}),
                                       ev::buildRequested(BuildReason::EDITED, "sha256:c1")));
  b = s + 1;
  append("image/acme/web/1",
         batch(ev::buildStarted(b, "sha256:c1", lines),
               ev::lineBuilt(b, "3.13", "3.13.1", flask, "sha256:m3", "sha256:s3"),
               ev::lineBuilt(b, "3.12", "3.12.8", flask12, "sha256:m4", "sha256:s4"),
               ev::buildSucceeded(b)));

  // acme/api: its only build fails; then it is deleted and the name is reused.
  s = append("image/acme/api/1", batch(ev::imageCreated("acme", "api", "", "python", {"nope"}, {}),
                                       ev::buildRequested(BuildReason::CREATED, "sha256:c1")));
  b = s + 1;
  append("image/acme/api/1",
         batch(ev::buildStarted(b, "sha256:c1", lines),
               ev::lineSkipped(b, "3.13", "3.13.1", "E_PACKAGE_NOT_FOUND", "no nope"),
               ev::lineSkipped(b, "3.12", "3.12.8", "E_PACKAGE_NOT_FOUND", "no nope"),
               ev::buildFailed(b, "E_NO_BUILDABLE_LINE", "no line")));
  append("image/acme/api/1", batch(ev::imageDeleted("by alice")));
  s = append("image/acme/api/2", batch(ev::imageCreated("acme", "api", "", "python", {}, {}),
                                       ev::buildRequested(BuildReason::CREATED, "sha256:c1")));

  // A new catalog, and globex/web, whose build is still running at the end.
  append("catalog", batch(ev::catalogLoaded("sha256:c2", "/cat2",
                                            {{"python", {{"3.13", "3.13.2"}}}, {"node", {}}})));
  s = append("image/globex/web/1", batch(ev::imageCreated("globex", "web", "", "python", {}, {}),
                                         ev::buildRequested(BuildReason::CREATED, "sha256:c2")));
  append("image/globex/web/1", batch(ev::buildStarted(s + 1, "sha256:c2", {{"3.13", "3.13.2"}})));
}

void History::applyTo(domain::Projection& p, uint64_t from, uint64_t until) const {
  auto txn = log_->read();
  ASSERT_TRUE(txn.ok());
  auto s = (*txn)->forEach(from, [&](const store::EventRef& e) {
    if (e.sequence() > until) return false;
    capnp::FlatArrayMessageReader reader(e.words());
    p.apply(reader.getRoot<schema::Event>());
    return true;
  });
  ASSERT_TRUE(s.ok());
}

domain::Projection History::replay(uint64_t until) const {
  domain::Projection p;
  applyTo(p, 1, until);
  return p;
}

std::string describe(const domain::Projection& p) {
  std::ostringstream o;
  o << "at " << p.lastSequence() << " time " << p.lastTime() << "\n";
  o << "catalog " << p.catalog().digest << " " << p.catalog().source << "\n";
  for (const auto& [starter, lines] : p.catalog().starters) {
    o << "  " << starter << ":";
    for (const auto& l : lines) o << " " << l.line << "=" << l.version;
    o << "\n";
  }
  for (const std::string& t : p.tenants()) {
    o << "tenant " << t << ":";
    for (const auto* i : p.gallery(t)) o << " " << i->name;
    o << "\n";
  }
  for (const char* name : {"web", "api"}) {
    for (const char* tenant : {"acme", "globex"}) {
      o << "next " << p.nextStreamId(tenant, name) << "\n";
    }
  }
  if (const auto* i = p.byIdempotencyKey("create/acme/k1")) o << "key -> " << i->streamId << "\n";
  for (const std::string& stream : History::streams()) {
    const domain::ImageState* i = p.byStream(stream);
    if (!i) continue;
    o << stream << " " << i->tenant << "/" << i->name << " '" << i->description << "' "
      << i->starter << " v" << i->version << (i->deleted ? " deleted" : "") << " created "
      << i->createdAt << " status " << i->status() << "\n  packages";
    for (const auto& pk : i->packages) o << " " << pk;
    o << "\n  env";
    for (const auto& e : i->env) o << " " << e.key << "=" << e.value;
    o << "\n  tags";
    for (const auto& [tag, v] : i->tags()) o << " " << tag << "->" << v;
    o << "\n";
    for (const auto& b : i->builds) {
      o << "  build " << b.id << " #" << b.number << " " << domain::toString(b.reason) << " "
        << domain::toString(b.status) << (b.started ? " started " : " ") << b.catalogDigest << " "
        << b.requestedAt << ".." << b.endedAt << " " << b.errorCode << " '" << b.errorMessage
        << "'\n";
      for (const auto& l : b.lines) {
        o << "    " << l.line << " " << l.version << " " << domain::toString(l.status) << " "
          << l.code() << " '" << l.reason() << "' " << l.digest() << " " << l.sbomDigest() << " [";
        for (const auto& pk : *l.packages) o << " " << pk;
        o << " ]\n";
      }
    }
  }
  return o.str();
}

}  // namespace imaged::testing
