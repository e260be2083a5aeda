// Builders of the payloads the daemon appends (schema/events.capnp): one function per event,
// each returning the flat message the store takes.
#pragma once

#include <capnp/common.h>
#include <kj/array.h>

#include <string>
#include <vector>

#include "daemon/catalog/starter.h"
#include "daemon/catalog/tags.h"
#include "schema/events.capnp.h"

namespace imaged::domain::events {

using Payload = kj::Array<capnp::word>;

struct ResolvedPackage {
  std::string name, version;
};

Payload imageCreated(const std::string& tenant, const std::string& name,
                     const std::string& description, const std::string& starter,
                     const std::vector<std::string>& packages,
                     const std::vector<catalog::EnvVar>& env);
Payload imageEdited(const std::string& description, const std::vector<std::string>& packages,
                    const std::vector<catalog::EnvVar>& env);
Payload imageDeleted(const std::string& reason);
Payload buildRequested(schema::BuildReason reason, const std::string& catalogDigest);
Payload buildStarted(uint64_t buildId, const std::string& catalogDigest,
                     const std::vector<catalog::BuiltLine>& lines);
Payload lineBuilt(uint64_t buildId, const std::string& line, const std::string& version,
                  const std::vector<ResolvedPackage>& packages, const std::string& digest,
                  const std::string& sbomDigest = "");
Payload lineSkipped(uint64_t buildId, const std::string& line, const std::string& version,
                    const std::string& code, const std::string& reason);
Payload buildSucceeded(uint64_t buildId);
Payload buildFailed(uint64_t buildId, const std::string& code, const std::string& message);
Payload buildCancelled(uint64_t buildId, uint64_t supersededBy, const std::string& reason);
Payload catalogLoaded(
    const std::string& digest, const std::string& source,
    const std::vector<std::pair<std::string, std::vector<catalog::BuiltLine>>>& starters);

}  // namespace imaged::domain::events
