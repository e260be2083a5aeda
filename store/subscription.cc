#include "store/subscription.h"

#include <cstring>

namespace imaged::store {

Result<std::vector<StoredEvent>> Subscription::next(size_t max, std::chrono::milliseconds wait) {
  std::vector<StoredEvent> out;
  if (max == 0) return out;
  if (log_.lastSequence() < next_) log_.waitForSequence(next_ - 1, wait);
  auto txn = log_.read();
  if (!txn.ok()) return txn.error();
  uint64_t expected = next_;
  std::optional<Error> gap;
  auto s = (*txn)->forEach(next_, [&](const EventRef& e) {
    if (e.sequence() != expected) {
      gap = Error{"E_STORE_CORRUPT", "event " + std::to_string(expected) + " is missing"};
      return false;
    }
    StoredEvent copy{e.sequence(), kj::heapArray<capnp::word>(e.words().size())};
    std::memcpy(copy.words.begin(), e.words().begin(), e.words().size() * sizeof(capnp::word));
    out.push_back(std::move(copy));
    ++expected;
    return out.size() < max;
  });
  if (!s.ok()) return s.error();
  if (gap) return *gap;
  next_ = expected;
  return out;
}

}  // namespace imaged::store
