// A scripted history in a real event log, for the projection and snapshot tests: two tenants,
// creates, an edit that supersedes a running build, skipped lines, a failed build, a delete and
// a name reused, an idempotency key, two catalogs. Also an independent description of a
// projection through its public interface only, so that two states can be compared field by
// field (a field the snapshot forgot shows up as a difference).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "daemon/domain/projection.h"
#include "store/event_log.h"
#include "tests/common/temp_dir.h"

namespace imaged::testing {

class History {
 public:
  // Writes the script into a new log in `dir`. `variant` changes one event's text, for a log
  // of the same length whose hashes differ.
  explicit History(const std::string& dir, int variant = 0);

  store::EventLog& log() { return *log_; }
  uint64_t last() const { return log_->lastSequence(); }
  // The state after applying events 1..until.
  domain::Projection replay(uint64_t until) const;
  // Applies events from..until onto `p`.
  void applyTo(domain::Projection& p, uint64_t from, uint64_t until) const;

  // Every stream id the script writes to.
  static const std::vector<std::string>& streams();

 private:
  uint64_t append(const std::string& stream, std::vector<kj::Array<capnp::word>> payloads,
                  const std::string& idempotencyKey = "");
  std::unique_ptr<store::EventLog> log_;
};

std::string describe(const domain::Projection& p);

}  // namespace imaged::testing
