#include "daemon/domain/events.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include "schema/lists.h"

namespace imaged::domain::events {
namespace {

using schema_lists::envOf;
using schema_lists::setEnv;
using schema_lists::setTexts;
using schema_lists::texts;

template <typename Fn>
Payload make(Fn&& fill) {
  capnp::MallocMessageBuilder builder;
  fill(builder.initRoot<schema::Payload>());
  return capnp::messageToFlatArray(builder);
}

template <typename ListBuilder>
void setLines(ListBuilder list, const std::vector<catalog::BuiltLine>& lines) {
  for (size_t i = 0; i < lines.size(); ++i) {
    list[i].setLine(lines[i].line);
    list[i].setVersion(lines[i].version);
  }
}

}  // namespace

Payload imageCreated(const std::string& tenant, const std::string& name,
                     const std::string& description, const std::string& starter,
                     const std::vector<std::string>& packages,
                     const std::vector<catalog::EnvVar>& env) {
  return make([&](schema::Payload::Builder p) {
    auto e = p.initImageCreated();
    e.setTenant(tenant);
    e.setName(name);
    e.setDescription(description);
    e.setStarter(starter);
    setTexts(e.initPackages(packages.size()), packages);
    setEnv(e.initEnv(env.size()), env);
  });
}

Payload imageEdited(const std::string& description, const std::vector<std::string>& packages,
                    const std::vector<catalog::EnvVar>& env) {
  return make([&](schema::Payload::Builder p) {
    auto e = p.initImageEdited();
    e.setDescription(description);
    setTexts(e.initPackages(packages.size()), packages);
    setEnv(e.initEnv(env.size()), env);
  });
}

Payload imageDeleted(const std::string& reason) {
  return make([&](schema::Payload::Builder p) { p.initImageDeleted().setReason(reason); });
}

Payload buildRequested(schema::BuildReason reason, const std::string& catalogDigest) {
  return make([&](schema::Payload::Builder p) {
    auto e = p.initBuildRequested();
    e.setReason(reason);
    e.setCatalogDigest(catalogDigest);
  });
}

Payload buildStarted(uint64_t buildId, const std::string& catalogDigest,
                     const std::vector<catalog::BuiltLine>& lines) {
  return make([&](schema::Payload::Builder p) {
    auto e = p.initBuildStarted();
    e.setBuildId(buildId);
    e.setCatalogDigest(catalogDigest);
    setLines(e.initLines(lines.size()), lines);
  });
}

Payload lineBuilt(uint64_t buildId, const std::string& line, const std::string& version,
                  const std::vector<ResolvedPackage>& packages, const std::string& digest,
                  const std::string& sbomDigest) {
  return make([&](schema::Payload::Builder p) {
    auto e = p.initLineBuilt();
    e.setBuildId(buildId);
    e.setLine(line);
    e.setVersion(version);
    auto list = e.initPackages(packages.size());
    for (size_t i = 0; i < packages.size(); ++i) {
      list[i].setName(packages[i].name);
      list[i].setVersion(packages[i].version);
    }
    e.setDigest(digest);
    e.setSbomDigest(sbomDigest);
  });
}

Payload lineSkipped(uint64_t buildId, const std::string& line, const std::string& version,
                    const std::string& code, const std::string& reason) {
  return make([&](schema::Payload::Builder p) {
    auto e = p.initLineSkipped();
    e.setBuildId(buildId);
    e.setLine(line);
    e.setVersion(version);
    e.setCode(code);
    e.setReason(reason);
  });
}

Payload buildSucceeded(uint64_t buildId) {
  return make([&](schema::Payload::Builder p) { p.initBuildSucceeded().setBuildId(buildId); });
}

Payload buildFailed(uint64_t buildId, const std::string& code, const std::string& message) {
  return make([&](schema::Payload::Builder p) {
    auto e = p.initBuildFailed();
    e.setBuildId(buildId);
    e.setCode(code);
    e.setMessage(message);
  });
}

Payload buildCancelled(uint64_t buildId, uint64_t supersededBy, const std::string& reason) {
  return make([&](schema::Payload::Builder p) {
    auto e = p.initBuildCancelled();
    e.setBuildId(buildId);
    e.setSupersededBy(supersededBy);
    e.setReason(reason);
  });
}

Payload catalogLoaded(
    const std::string& digest, const std::string& source,
    const std::vector<std::pair<std::string, std::vector<catalog::BuiltLine>>>& starters) {
  return make([&](schema::Payload::Builder p) {
    auto e = p.initCatalogLoaded();
    e.setDigest(digest);
    e.setSource(source);
    auto list = e.initStarters(starters.size());
    for (size_t i = 0; i < starters.size(); ++i) {
      list[i].setName(starters[i].first);
      setLines(list[i].initLines(starters[i].second.size()), starters[i].second);
    }
  });
}

}  // namespace imaged::domain::events
